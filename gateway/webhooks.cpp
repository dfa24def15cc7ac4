#include "gateway/webhooks.hpp"

#include "runtime/utf8.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace keel::gateway {

namespace {

constexpr std::size_t delivery_bytes_max = 200;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The secret or token: the file's text without a final line break. An empty or unreadable file
// authenticates nothing.
result<std::string> read_secret(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(errc::unavailable, "the webhook's secret cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  auto s = text.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty()) return make_error(errc::unavailable, "the webhook's secret is empty");
  return s;
}

bool same(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace

std::string webhook_signature(const std::string& secret, const std::string& body) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(body.data()),
       body.size(), digest, &length);
  static const char hex[] = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

result<webhook_invoke> check_webhook(const std::vector<config::webhook_config>& hooks, const std::string& name,
                                     const http_request& request) {
  auto hook = std::find_if(hooks.begin(), hooks.end(), [&](const config::webhook_config& h) { return h.name == name; });
  if (hook == hooks.end()) return make_error(errc::not_found, "no webhook " + name);
  auto header = [&](const std::string& h) -> const std::string* {
    auto it = request.headers.find(lower(h));
    return it == request.headers.end() ? nullptr : &it->second;
  };
  // Who it is first: nothing about the request is told to one that cannot prove it.
  if (!hook->secret_file.empty()) {
    auto secret = read_secret(hook->secret_file);
    if (!secret) return secret.error();
    const std::string* given = header(hook->signature_header);
    if (!given) return make_error(errc::denied, "the request is not signed (" + hook->signature_header + ": sha256=<hex>)");
    if (!same(lower(*given), webhook_signature(*secret, request.body)))
      return make_error(errc::denied, "the signature does not match the body");
  } else {
    auto token = read_secret(hook->token_file);
    if (!token) return token.error();
    // The scheme in any case (RFC 9110), then the token itself, exactly.
    const std::string* given = header("authorization");
    if (!given || given->size() < 7 || lower(given->substr(0, 7)) != "bearer " || !same(given->substr(7), *token))
      return make_error(errc::denied, "a bearer token is required");
  }
  const std::string* delivery = header(hook->idempotency_header);
  if (!delivery || delivery->empty() || delivery->size() > delivery_bytes_max)
    return make_error(errc::invalid_argument, "the request names no delivery: header " + hook->idempotency_header + " (1 to " +
                                                std::to_string(delivery_bytes_max) + " bytes) makes a retry safe");
  if (!wire::is_valid_utf8(request.body)) return make_error(errc::invalid_argument, "the body is not UTF-8 text");
  std::string input = hook->input;
  for (auto at = input.find("{{body}}"); at != std::string::npos; at = input.find("{{body}}", at + request.body.size()))
    input.replace(at, 8, request.body);
  return webhook_invoke{hook->agent, wire::value(input), webhook_key_prefix + hook->name + "/" + *delivery, "webhook-" + hook->name};
}

} // namespace keel::gateway
