// XML: the minimal extraction S3 replies need (they are flat and machine-made).
#include <cstdint>
#include <cstdlib>

#include "s3/s3_client.hpp"

namespace fleetpipe::detail {

std::string xml_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    auto semi = s.find(';', i);
    if (semi == std::string_view::npos || semi - i > 10) {
      out.push_back('&');
      continue;
    }
    std::string_view ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp") out.push_back('&');
    else if (ent == "lt") out.push_back('<');
    else if (ent == "gt") out.push_back('>');
    else if (ent == "quot") out.push_back('"');
    else if (ent == "apos") out.push_back('\'');
    else if (!ent.empty() && ent[0] == '#') {
      long v = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X')
                   ? std::strtol(std::string(ent.substr(2)).c_str(), nullptr, 16)
                   : std::strtol(std::string(ent.substr(1)).c_str(), nullptr, 10);
      if (v > 0 && v < 128) out.push_back(static_cast<char>(v));
      else if (v >= 128 && v < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (v >> 6)));
        out.push_back(static_cast<char>(0x80 | (v & 0x3F)));
      } else if (v >= 0x800 && v < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (v >> 12)));
        out.push_back(static_cast<char>(0x80 | ((v >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (v & 0x3F)));
      }
    } else {
      out.append(s.substr(i, semi - i + 1));
    }
    i = semi;
  }
  return out;
}

std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::vector<std::string_view> xml_blocks(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> out;
  std::string open = "<" + std::string(tag), close = "</" + std::string(tag) + ">";
  std::size_t pos = 0;
  while (true) {
    auto b = xml.find(open, pos);
    if (b == std::string_view::npos) break;
    auto after = b + open.size();
    if (after >= xml.size()) break;
    if (xml[after] != '>' && xml[after] != ' ') {  // <PartNumber> is not <Part>
      pos = after;
      continue;
    }
    auto gt = xml.find('>', after);
    if (gt == std::string_view::npos) break;
    if (xml[gt - 1] == '/') {  // <Tag/>
      out.emplace_back();
      pos = gt + 1;
      continue;
    }
    auto e = xml.find(close, gt + 1);
    if (e == std::string_view::npos) break;
    out.push_back(xml.substr(gt + 1, e - gt - 1));
    pos = e + close.size();
  }
  return out;
}

std::optional<std::string> xml_text(std::string_view xml, std::string_view tag) {
  auto b = xml_blocks(xml, tag);
  if (b.empty()) return std::nullopt;
  return xml_unescape(b.front());
}

}  // namespace fleetpipe::detail
