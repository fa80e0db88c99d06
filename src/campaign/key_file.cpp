// The private key file on the signer's machine: read only when no one else can read it.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "campaign/internal.hpp"

namespace fleetpipe {

Result<std::string> load_campaign_private_key(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Error(errc::io_error, "cannot stat key file " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return Error(errc::io_error, "key file " + path + " is not a file");
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Error(errc::insecure_refused, "key file " + path + " is accessible by group or others"
                                         " (mode " + mode + "); chmod 600 it");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(errc::io_error, "cannot open key file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string pem = ss.str();
  if (!campaign_public_key_of(pem)) {
    return Error(errc::invalid_argument, "key file " + path + " is not a PEM Ed25519 private key");
  }
  return pem;
}

}  // namespace fleetpipe
