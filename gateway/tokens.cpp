#include "gateway/tokens.hpp"

#include "gateway/request.hpp"

#include "runtime/clock.hpp"
#include "runtime/ids.hpp"
#include "runtime/secrets.hpp"
#include "runtime/log.hpp"

#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <strings.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace keel::gateway {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("gateway");
  return l;
}

bool valid_hash(const std::string& h) {
  if (h.size() != 7 + 64 || h.rfind("sha256:", 0) != 0) return false;
  return h.find_first_not_of("0123456789abcdef", 7) == std::string::npos;
}

} // namespace

std::string random_token() { return "keel_" + random_hex(32); }

std::string token_hash(const std::string& token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  static const char hex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned char b : digest) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

result<std::vector<named_hash>> read_tokens_file(const std::string& path) {
  std::vector<named_hash> out;
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return out;
  if ((st.st_mode & 077) != 0)
    return make_error(errc::config, path + ": others may read the gateway's tokens; chmod 600 " + path);
  std::ifstream in(path);
  if (!in) return make_error(errc::config, path + ": cannot read");
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    named_hash t;
    std::string extra;
    words >> t.name >> t.sha256_hex >> extra;
    if (!is_valid_name(t.name) || !valid_hash(t.sha256_hex) || !extra.empty())
      return make_error(errc::config, path + ":" + std::to_string(number) +
                                        ": expected \"<name> sha256:<64 hex digits>\" (names: letters, digits, '_', '-')");
    // What the gateway does with a token is done in its name: never one of keel's own senders.
    if (auto reserved = reserved_sender_problem(t.name); !reserved.empty())
      return make_error(errc::config, path + ":" + std::to_string(number) + ": '" + t.name + "': " + reserved);
    for (const auto& known : out)
      if (known.name == t.name) return make_error(errc::config, path + ":" + std::to_string(number) + ": '" + t.name + "' twice");
    out.push_back(std::move(t));
  }
  return out;
}

result<void> write_tokens_file(const std::string& path, const std::vector<named_hash>& tokens) {
  std::string body = "# keel gateway tokens: \"<name> sha256:<hash>\", one per line (keel token). Owner only.\n";
  for (const auto& t : tokens) body += t.name + " " + t.sha256_hex + "\n";
  return write_private_file(path, body);
}

result<bool> make_first_token(const std::string& tokens_file, const std::string& name, const std::string& base_url,
                              const std::string& url_file) {
  auto known = read_tokens_file(tokens_file);
  if (!known) return known.error();
  if (!known->empty()) return false;
  auto token = random_token();
  if (auto w = write_tokens_file(tokens_file, {{name, token_hash(token)}}); !w) return w.error();
  if (auto w = write_private_file(url_file, base_url + "/#token=" + token + "\n"); !w) return w.error();
  return true;
}

token_book::token_book(std::string single, std::string single_name, std::string file)
  : single_hash_(single.empty() ? std::string() : token_hash(single)), single_name_(std::move(single_name)),
    file_(std::move(file)) {}

void token_book::reload_if_changed() {
  if (file_.empty()) return;
  auto now = steady_ms();
  if (checked_ms_ >= 0 && now - checked_ms_ < 1000) return;
  checked_ms_ = now;
  struct stat st{};
  std::int64_t mtime = -2, size = -2;
  if (::stat(file_.c_str(), &st) == 0) {
    mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    size = st.st_size;
  }
  if (mtime == file_mtime_ns_ && size == file_size_) return;
  auto read = read_tokens_file(file_);
  if (!read) {
    // Kept as it was: a file being edited by hand does not lock everyone out (nor let anyone in).
    logger()->error("gateway tokens: {}; the tokens read before are kept", read.error().message);
    return;
  }
  file_mtime_ns_ = mtime;
  file_size_ = size;
  from_file_ = std::move(*read);
}

bool token_book::any() {
  std::lock_guard lock{mutex_};
  reload_if_changed();
  return !single_hash_.empty() || !from_file_.empty();
}

std::optional<std::string> token_book::who(const std::string& authorization) {
  // RFC 9110: the scheme is case-insensitive, then one or more spaces, then the token.
  if (authorization.size() < 8 || strncasecmp(authorization.c_str(), "bearer ", 7) != 0) return std::nullopt;
  auto start = authorization.find_first_not_of(' ', 7);
  if (start == std::string::npos) return std::nullopt;
  auto hashed = token_hash(authorization.substr(start));
  std::lock_guard lock{mutex_};
  reload_if_changed();
  std::optional<std::string> found;
  // Every entry is compared (no early exit), each in constant time.
  if (!single_hash_.empty() && same_secret(hashed, single_hash_)) found = single_name_;
  for (const auto& t : from_file_)
    if (same_secret(hashed, t.sha256_hex) && !found) found = t.name;
  return found;
}

} // namespace keel::gateway
