// The S3 client: one request at a time over one kept-alive Beast + OpenSSL connection.
#include "s3/s3_client.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/utc_time.hpp"
#include "fleetpipe/version.hpp"

namespace fleetpipe::detail {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_ip(const std::string& host) {
  boost::system::error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

constexpr std::size_t kMaxResponseBody = 4u << 20;
// Bytes received but not yet consumed by the parser: a status line + headers (Beast's header
// limit is 8 KiB) or one chunk header. Beast re-parses an incomplete chunk header from its start
// on every read, so a server dripping an endless chunk extension would cost O(n^2) CPU; with this
// cap the read fails (buffer_overflow -> a network failure, retried) after 16 KiB instead.
// Found by fuzz_http_response (tests/fuzz/corpus/http_response/regression-chunk-ext-drip).
constexpr std::size_t kMaxUnparsedResponseBytes = 16u << 10;

// A write-only BIO appending to the std::string in its data pointer. A TLS body write swaps it
// in as the SSL's write BIO, so all records of one write land in one buffer and leave with one
// socket write: Asio's stream sends each record (its BIO pair holds 17 KiB) as its own sendmsg
// and handler, and on a loopback or LAN peer the sendmsg, not the size, is what costs.
int sink_write(BIO* b, const char* data, int len) {
  if (len <= 0) return 0;
  try {
    static_cast<std::string*>(BIO_get_data(b))->append(data, static_cast<std::size_t>(len));
  } catch (...) {  // out of memory: a failed write, never an exception through OpenSSL
    return -1;
  }
  return len;
}
long sink_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
int sink_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}
BIO_METHOD* sink_method() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fleetpipe record sink");
    if (bm) {
      BIO_meth_set_write(bm, sink_write);
      BIO_meth_set_ctrl(bm, sink_ctrl);
      BIO_meth_set_create(bm, sink_create);
    }
    return bm;
  }();
  return m;
}

}  // namespace

// ---- endpoint --------------------------------------------------------------------------------

std::string S3Endpoint::tls_name() const { return virtual_host ? bucket + "." + host : host; }

std::string S3Endpoint::host_header() const {
  std::string h = tls_name();
  if (h.find(':') != std::string::npos) h = "[" + h + "]";  // IPv6 literal
  if ((https && port != 443) || (!https && port != 80)) h += ":" + std::to_string(port);
  return h;
}

std::string S3Endpoint::raw_path_for(std::string_view key) const {
  std::string p = virtual_host ? "/" : "/" + bucket + (key.empty() ? "" : "/");
  p += key;
  return p;
}

std::string S3Endpoint::path_for(std::string_view key) const {
  return uri_encode(raw_path_for(key), true);
}

Result<S3Endpoint> parse_endpoint(const UploaderConfig& c) {
  S3Endpoint ep;
  ep.bucket = c.bucket;
  ep.virtual_host = c.virtual_host_style;
  std::string url = c.endpoint.empty() ? "https://s3." + c.region + ".amazonaws.com" : c.endpoint;
  auto se = url.find("://");
  if (se == std::string::npos) {
    return Error(errc::invalid_config, "/uploader/endpoint: must start with https:// or http://, got \"" + url + "\"",
                 "/uploader/endpoint");
  }
  std::string scheme = lower(url.substr(0, se));
  if (scheme == "https") {
    ep.https = true;
  } else if (scheme == "http") {
    if (!c.allow_insecure_http) {
      return Error(errc::insecure_refused,
                   "/uploader/endpoint: plain http:// needs \"allow_insecure_http\": true",
                   "/uploader/endpoint");
    }
    ep.https = false;
  } else {
    return Error(errc::invalid_config, "/uploader/endpoint: scheme must be https or http",
                 "/uploader/endpoint");
  }
  std::string rest = url.substr(se + 3);
  auto slash = rest.find('/');
  if (slash != std::string::npos) {
    if (rest.substr(slash) != "/") {
      return Error(errc::invalid_config, "/uploader/endpoint: must not contain a path",
                   "/uploader/endpoint");
    }
    rest = rest.substr(0, slash);
  }
  ep.port = ep.https ? 443 : 80;
  std::string host = rest;
  if (!rest.empty() && rest[0] == '[') {  // [v6]:port
    auto close = rest.find(']');
    if (close == std::string::npos) {
      return Error(errc::invalid_config, "/uploader/endpoint: bad IPv6 literal", "/uploader/endpoint");
    }
    host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.empty() && rest[0] == ':') rest = rest.substr(0);
    else rest.clear();
  }
  auto colon = rest.rfind(':');
  if (colon != std::string::npos) {
    std::string port = rest.substr(colon + 1);
    if (host == rest) host = rest.substr(0, colon);
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end || p <= 0 || p > 65535) {
      return Error(errc::invalid_config, "/uploader/endpoint: bad port \"" + port + "\"",
                   "/uploader/endpoint");
    }
    ep.port = static_cast<std::uint16_t>(p);
  }
  if (host.empty()) {
    return Error(errc::invalid_config, "/uploader/endpoint: no host", "/uploader/endpoint");
  }
  ep.host = host;
  ep.connect_host = c.connect_address.empty() ? ep.host : c.connect_address;
  return ep;
}

// ---- responses and classification ------------------------------------------------------------

std::string S3Response::header(std::string_view name) const {
  std::string ln = lower(name);
  for (const auto& [n, v] : headers)
    if (lower(n) == ln) return v;
  return {};
}

// ---- the client ------------------------------------------------------------------------------

struct S3Client::Core : std::enable_shared_from_this<Core> {
  Core(net::io_context& io, const UploaderConfig& c, Hooks h, S3Endpoint e)
      : ioc(io), ctx(ssl::context::tls_client), ep(std::move(e)), hooks(std::move(h)), timer(io) {
    tls_verify = c.tls_verify;
    ca_file = c.ca_file;
    connect_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(c.connect_timeout_s * 1000));
    request_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(c.request_timeout_s * 1000));
    chunk_cap = std::max<std::size_t>(4096, c.io_chunk_bytes);
    chunk.reset(new char[chunk_cap]);
  }

  ~Core() {
    if (tls_session) SSL_SESSION_free(tls_session);
    if (sink) BIO_free(sink);
  }

  net::io_context& ioc;
  ssl::context ctx;
  // The newest resumable TLS session with this endpoint: a reconnect (a server that closes idle
  // connections does so between heartbeats) resumes it instead of a full handshake, which
  // costs ~3 KB on the wire, mostly the certificate chain. The peer was verified when it was made.
  SSL_SESSION* tls_session = nullptr;
  S3Endpoint ep;
  Hooks hooks;
  bool tls_verify = true;
  std::string ca_file;
  std::chrono::milliseconds connect_timeout{10000}, request_timeout{60000};

  // Shared so that a handler still pending on a closed stream keeps it alive until it runs
  // (destroying an ssl_stream with an operation in flight is undefined behaviour).
  std::shared_ptr<beast::tcp_stream> plain;
  std::shared_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  std::shared_ptr<void> keep() const {
    if (tls) return tls;
    return plain;
  }
  bool connected = false;
  bool reused = false;        // this request runs on a kept-alive connection
  bool stale_retry_done = false;
  net::steady_timer timer;
  beast::flat_buffer rbuf{kMaxUnparsedResponseBytes};
  std::optional<http::response_parser<http::string_body>> parser;
  std::unique_ptr<char[]> chunk;
  std::size_t chunk_cap = 0;
  BIO* sink = nullptr;   // see sink_write; ours, swapped in only inside encrypt()
  std::string records;   // the TLS records of the body write in flight

  S3Request req;
  Handler done;
  std::uint64_t gen = 0;
  bool busy = false;
  std::string head;
  std::uint64_t sent = 0;
  MonoTime wake_at{};  // when the bucket wait for the next body write should end

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }

  template <class F>
  void with_stream(F&& f) {
    if (tls) f(*tls);
    else f(*plain);
  }

  Result<void> init_tls() {
    if (!ep.https) return {};
    boost::system::error_code ec;
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    if (!ca_file.empty()) {
      ctx.load_verify_file(ca_file, ec);
      if (ec) {
        return Error(errc::tls_error, "cannot load CA file " + ca_file + ": " + ec.message());
      }
    } else if (SSL_CTX_load_verify_locations(ctx.native_handle(), X509_get_default_cert_file(),
                                             X509_get_default_cert_dir()) != 1) {
      ERR_clear_error();  // an empty system store shows up as a verification failure later
    }
    ctx.set_verify_mode(tls_verify ? ssl::verify_peer : ssl::verify_none);
    return {};
  }

  void close() {
    // Dropped without a close_notify, OpenSSL would take the session as broken and never
    // resume it; after a completed handshake it is not (an idle close, or a server's).
    if (tls && connected) SSL_set_shutdown(tls->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    connected = false;
    if (tls || plain) {
      boost::system::error_code ec;
      lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
      lowest().close();
    }
    tls.reset();
    plain.reset();
    rbuf.clear();
  }

  void finish(S3Outcome o) {
    busy = false;
    timer.cancel();
    auto h = std::move(done);
    done = nullptr;
    if (h) h(std::move(o));
  }

  void fail(FailureClass cls, std::string msg) {
    close();
    S3Outcome o;
    o.failure.cls = cls;
    o.failure.message = std::move(msg);
    finish(std::move(o));
  }

  std::string where() const {
    return ep.tls_name() + " (" + ep.connect_host + ":" + std::to_string(ep.port) + ")";
  }

  // A transport error: a kept-alive connection the server already closed gets one fresh try.
  void transport_error(const boost::system::error_code& ec, const char* during) {
    bool got_response = parser && parser->got_some();
    if (reused && !stale_retry_done && !got_response && ec != beast::error::timeout) {
      stale_retry_done = true;
      close();
      start();
      return;
    }
    FailureClass cls = ec == beast::error::timeout ? FailureClass::timeout : FailureClass::network;
    fail(cls, std::string(during) + " " + where() + ": " + ec.message());
  }

  void send(S3Request r, Handler h) {
    req = std::move(r);
    if (!req.reader) req.body_size = req.body_inline.size();
    done = std::move(h);
    busy = true;
    ++gen;
    stale_retry_done = false;
    start();
  }

  void start() {
    sent = 0;
    parser.reset();
    if (connected) {
      reused = true;
      write_head();
      return;
    }
    reused = false;
    connect();
  }

  void connect() {
    close();
    tcp::resolver resolver(ioc);
    boost::system::error_code ec;
    // Synchronous on purpose: Asio's async_resolve runs getaddrinfo on a hidden thread.
    auto results = resolver.resolve(ep.connect_host, std::to_string(ep.port), ec);
    if (ec) return fail(FailureClass::network, "cannot resolve " + ep.connect_host + ": " + ec.message());
    if (ep.https) {
      tls = std::make_shared<beast::ssl_stream<beast::tcp_stream>>(ioc, ctx);
      SSL* s = tls->native_handle();
      std::string name = ep.tls_name();
      if (!is_ip(name)) SSL_set_tlsext_host_name(s, name.c_str());  // SNI (never for IPs)
      if (tls_session) SSL_set_session(s, tls_session);
      if (tls_verify) {
        X509_VERIFY_PARAM* p = SSL_get0_param(s);
        X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (is_ip(name)) X509_VERIFY_PARAM_set1_ip_asc(p, name.c_str());
        else X509_VERIFY_PARAM_set1_host(p, name.c_str(), name.size());
      }
    } else {
      plain = std::make_shared<beast::tcp_stream>(ioc);
    }
    lowest().expires_after(connect_timeout);
    auto self = shared_from_this();
    auto g = gen;
    lowest().async_connect(results, [self, g, k = keep()](boost::system::error_code ec, const tcp::endpoint&) {
      if (g != self->gen || !self->busy) return;
      if (ec) {
        FailureClass cls = ec == beast::error::timeout ? FailureClass::timeout : FailureClass::network;
        return self->fail(cls, "cannot connect to " + self->where() + ": " + ec.message());
      }
      boost::system::error_code ignored;
      self->lowest().socket().set_option(tcp::no_delay(true), ignored);
      if (self->tls) return self->handshake();
      self->connected = true;
      self->write_head();
    });
  }

  void handshake() {
    lowest().expires_after(connect_timeout);
    auto self = shared_from_this();
    auto g = gen;
    tls->async_handshake(ssl::stream_base::client, [self, g, k = keep()](boost::system::error_code ec) {
      if (g != self->gen || !self->busy) return;
      if (ec) {
        long vr = SSL_get_verify_result(self->tls->native_handle());
        std::string why = vr != X509_V_OK
                              ? std::string("certificate verification failed: ") +
                                    X509_verify_cert_error_string(vr)
                              : ec.message();
        std::string trust = self->ca_file.empty() ? "the system CA store"
                                                  : "CA file " + self->ca_file;
        // A rejected certificate or a TLS protocol failure will not mend by itself (tls: long
        // backoff); a connection reset, closed or timed out mid-handshake is the network's
        // (a restarting server worker does that) and is retried like any transport error.
        const bool transport = vr == X509_V_OK && ec.category() != net::error::get_ssl_category();
        FailureClass cls = !transport                       ? FailureClass::tls
                           : ec == beast::error::timeout    ? FailureClass::timeout
                                                            : FailureClass::network;
        return self->fail(cls, "TLS handshake with " + self->where() + " failed: " + why + " (trusting " +
                                   trust + ")");
      }
      self->connected = true;
      if (self->hooks.on_tls_handshake) self->hooks.on_tls_handshake(SSL_session_reused(self->tls->native_handle()) == 1);
      self->remember_tls_session();
      self->write_head();
    });
  }

  /// Keeps the connection's session for the next connect. Under TLS 1.3 the server sends its
  /// session tickets after the handshake, so this runs again once a response has been read.
  void remember_tls_session() {
    if (!tls) return;
    SSL_SESSION* s = SSL_get1_session(tls->native_handle());
    if (!s) return;
    if (s == tls_session || !SSL_SESSION_is_resumable(s)) {
      SSL_SESSION_free(s);
      return;
    }
    if (tls_session) SSL_SESSION_free(tls_session);
    tls_session = s;
  }

  void write_head() {
    // Sign.
    auto creds = hooks.credentials ? hooks.credentials()
                                   : Result<Credentials>(Error(errc::auth_error, "no credentials"));
    if (!creds) return fail(FailureClass::auth, creds.error().message);
    SigV4Request sr;
    sr.method = req.method;
    sr.host = ep.host_header();
    sr.path = ep.raw_path_for(req.key);
    sr.query = req.query;
    sr.headers = req.headers;
    bool has_body = req.body_size > 0 || req.method == "PUT" || req.method == "POST";
    if (has_body) sr.headers.emplace_back("content-length", std::to_string(req.body_size));
    sr.payload_sha256 = req.payload_sha256.empty() ? sha256_hex(req.body_inline) : req.payload_sha256;
    SigV4Credentials sc;
    sc.access_key_id = creds->access_key_id;
    sc.secret_access_key = creds->secret_access_key;
    sc.session_token = creds->session_token;
    sc.region = region;
    auto sig = sign_v4(sr, sc, format_amz_date(hooks.wall()));
    if (!sig) return fail(FailureClass::auth, sig.error().message);

    head.clear();
    head += req.method + " " + ep.path_for(req.key);
    for (std::size_t i = 0; i < req.query.size(); ++i) {
      head += i == 0 ? '?' : '&';
      head += uri_encode(req.query[i].first, false);
      if (!req.query[i].second.empty()) head += "=" + uri_encode(req.query[i].second, false);
    }
    head += " HTTP/1.1\r\nHost: " + ep.host_header() + "\r\n";
    head += std::string("User-Agent: fleetpipe/") + kVersion + "\r\n";
    for (const auto& [n, v] : sr.headers) head += n + ": " + v + "\r\n";
    for (const auto& [n, v] : sig->headers_to_add) head += n + ": " + v + "\r\n";
    head += "\r\n";

    if (hooks.bucket) hooks.bucket->consume(head.size(), hooks.mono());
    lowest().expires_after(request_timeout);
    auto self = shared_from_this();
    auto g = gen;
    with_stream([&](auto& s) {
      net::async_write(s, net::buffer(head), [self, g, k = keep()](boost::system::error_code ec, std::size_t n) {
        if (g != self->gen || !self->busy) return;
        if (ec) return self->transport_error(ec, "writing to");
        if (self->hooks.on_bytes_sent) self->hooks.on_bytes_sent(n);
        self->write_body();
      });
    });
  }

  /// Encrypts [p, p + n) into `records` (whole TLS records, as SSL_write would send them).
  /// Called only between operations on the stream: the head's write has completed (Asio's BIO
  /// pair is empty) and no read is pending, so the records keep their order on the wire.
  bool encrypt(const char* p, std::size_t n) {
    if (!sink) {
      BIO_METHOD* m = sink_method();
      sink = m ? BIO_new(m) : nullptr;
      if (!sink) return false;
      BIO_set_data(sink, &records);
    }
    records.clear();
    SSL* s = tls->native_handle();
    BIO* orig = SSL_get_wbio(s);
    // The SSL owns one reference per slot: SSL_set0_wbio frees the one it replaces.
    BIO_up_ref(orig);
    BIO_up_ref(sink);
    SSL_set0_wbio(s, sink);
    bool ok = true;
    for (std::size_t done = 0; done < n;) {
      std::size_t w = 0;
      if (SSL_write_ex(s, p + done, n - done, &w) != 1) {
        ok = false;
        break;
      }
      done += w;
    }
    SSL_set0_wbio(s, orig);
    if (!ok) ERR_clear_error();
    return ok;
  }

  void body_written(boost::system::error_code ec, std::size_t n) {
    if (ec) return transport_error(ec, "writing to");
    sent += n;
    if (hooks.on_bytes_sent) hooks.on_bytes_sent(n);
    write_body();
  }

  void write_body() {
    if (sent >= req.body_size) return read_response();
    // Writes of up to one burst: what is available once the bucket holds wait_target bytes (a
    // write, its TLS record and its syscall cost about the same whatever their size here).
    std::size_t chunk_size = hooks.bucket ? hooks.bucket->chunk_size(chunk_cap) : chunk_cap;
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_size, req.body_size - sent));
    auto self = shared_from_this();
    auto g = gen;
    if (hooks.bucket && !hooks.bucket->unlimited()) {
      MonoTime now = hooks.mono();
      const std::uint64_t avail = hooks.bucket->available(now);
      if (avail < want) {
        const std::size_t target = hooks.bucket->wait_target(want);
        if (avail < target) {
          const auto wait = hooks.bucket->wait_for(target, now);
          wake_at = now + wait;
          timer.expires_after(wait);
          timer.async_wait([self, g](boost::system::error_code ec) {
            if (ec || g != self->gen || !self->busy) return;
            self->hooks.bucket->note_wake_lateness(self->hooks.mono() - self->wake_at);
            self->write_body();
          });
          return;
        }
        want = static_cast<std::size_t>(avail);
      }
    }
    if (req.reader) {
      auto n = req.reader(sent, chunk.get(), want);
      if (!n || *n != want) {
        close();
        S3Outcome o;
        o.failure.cls = FailureClass::permanent;
        o.failure.s3_code = "unreadable_record";
        o.failure.message = "reading the body from the buffer failed: " +
                            (n ? std::string("short read") : n.error().message);
        return finish(std::move(o));
      }
    } else {
      std::memcpy(chunk.get(), req.body_inline.data() + sent, want);
    }
    if (hooks.bucket) hooks.bucket->consume(want, hooks.mono());
    lowest().expires_after(request_timeout);
    if (tls) {
      if (!encrypt(chunk.get(), want)) return fail(FailureClass::network, "TLS write to " + where() + " failed");
      net::async_write(lowest(), net::buffer(records),
                       [self, g, want, k = keep()](boost::system::error_code ec, std::size_t) {
                         if (g != self->gen || !self->busy) return;
                         self->body_written(ec, want);
                       });
      return;
    }
    with_stream([&](auto& s) {
      net::async_write(s, net::buffer(chunk.get(), want),
                       [self, g, k = keep()](boost::system::error_code ec, std::size_t n) {
                         if (g != self->gen || !self->busy) return;
                         self->body_written(ec, n);
                       });
    });
  }

  void read_response() {
    parser.emplace();
    parser->body_limit(kMaxResponseBody);
    if (req.method == "HEAD") parser->skip(true);
    lowest().expires_after(request_timeout);
    auto self = shared_from_this();
    auto g = gen;
    with_stream([&](auto& s) {
      http::async_read(s, rbuf, *parser, [self, g, k = keep()](boost::system::error_code ec, std::size_t) {
        if (g != self->gen || !self->busy) return;
        if (ec) return self->transport_error(ec, "reading the response from");
        auto res = self->parser->release();
        S3Outcome o;
        o.response.status = res.result_int();
        for (const auto& f : res) {
          o.response.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
        }
        o.response.body = std::move(res.body());
        self->remember_tls_session();
        if (!res.keep_alive()) self->close();
        self->lowest_expiry_off();
        o.ok = response_ok(o.response);
        if (!o.ok) o.failure = classify_response(o.response);
        self->finish(std::move(o));
      });
    });
  }

  void lowest_expiry_off() {
    if (tls || plain) lowest().expires_never();
  }

  void cancel() {
    ++gen;
    done = nullptr;
    busy = false;
    timer.cancel();
    close();
  }

  std::string region;
};

Result<std::unique_ptr<S3Client>> S3Client::create(net::io_context& ioc, const UploaderConfig& c,
                                                   Hooks hooks) {
  auto ep = parse_endpoint(c);
  if (!ep) return std::move(ep).error();
  if (ep->bucket.empty()) {
    return Error(errc::invalid_config, "/uploader/bucket: must be set", "/uploader/bucket");
  }
  auto core = std::make_shared<Core>(ioc, c, std::move(hooks), std::move(*ep));
  core->region = c.region;
  auto t = core->init_tls();
  if (!t) return std::move(t).error();
  return std::unique_ptr<S3Client>(new S3Client(std::move(core)));
}

S3Client::~S3Client() {
  if (core_) core_->cancel();
}

void S3Client::async_send(S3Request req, Handler done) { core_->send(std::move(req), std::move(done)); }
void S3Client::cancel() { core_->cancel(); }
bool S3Client::busy() const { return core_->busy; }
const S3Endpoint& S3Client::endpoint() const { return core_->ep; }

}  // namespace fleetpipe::detail
