// The gateway's named tokens: who may use the HTTP API, and under which name their answers,
// cancels and retries are recorded. A tokens file holds one line per token, "<name> sha256:<hex>"
// (only the hash: reading the file gives no usable token), owner-only, made and changed by
// `keel token`; it is read again when it changes, so adding or removing a token needs no restart.
#pragma once

#include "runtime/result.hpp"

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace keel::gateway {

struct named_hash {
  std::string name;
  std::string sha256_hex;
};

// A new token: "keel_" and 64 hex digits (256 random bits).
std::string random_token();
// "sha256:<64 hex>" of a token.
std::string token_hash(const std::string& token);

// The lines of a tokens file, checked (mode, names, hashes); a missing file is an empty list.
result<std::vector<named_hash>> read_tokens_file(const std::string& path);
// Writes the list (0600, through a rename).
result<void> write_tokens_file(const std::string& path, const std::vector<named_hash>& tokens);

// A gateway told of no token at all gets one (a secret of this installation, even on loopback):
// `tokens_file` is made with a token for `name`, and `url_file` (owner-only) gets the dashboard's
// address carrying it after '#token=' (a fragment: never sent to a server, nor in a Referer).
// Nothing is done when the file has a token already; returns whether one was made.
result<bool> make_first_token(const std::string& tokens_file, const std::string& name, const std::string& base_url,
                              const std::string& url_file);

class token_book {
public:
  // `single`: gateway.token (named `single_name`); `file`: gateway.tokens_file (may be empty).
  token_book(std::string single, std::string single_name, std::string file);
  // Whether any token is known (with none, every request is refused).
  bool any();
  // The name whose token `authorization` ("Bearer <token>") carries, if any.
  std::optional<std::string> who(const std::string& authorization);

private:
  void reload_if_changed();  // under mutex_
  std::string single_hash_, single_name_, file_;
  std::mutex mutex_;
  std::vector<named_hash> from_file_;
  std::int64_t checked_ms_ = -1;
  std::int64_t file_mtime_ns_ = -1;
  std::int64_t file_size_ = -1;
};

} // namespace keel::gateway
