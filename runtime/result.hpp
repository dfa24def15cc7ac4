// Errors as values: every fallible keel function returns result<T>, an error code plus a
// message that names what was wrong. Exceptions from third-party code stop where it is wrapped.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace keel {

// The codes are part of the wire protocol (error replies carry their names), so only append.
enum class errc {
  malformed,            // bytes that do not decode, or a message of the wrong shape
  invalid_argument,     // a well-formed request whose values are not acceptable
  unsupported_version,  // protocol version we do not speak
  too_large,            // over a configured size limit
  not_found,            // unknown run, agent, step, key
  conflict,             // the request does not fit the current state (e.g. step not waiting)
  unavailable,          // a server or peer cannot be reached
  timeout,              // no answer within the bound
  io,                   // disk or operating-system failure
  config,               // a bad configuration file, key or value
  denied,               // refused by policy (sandbox, path restriction)
  cancelled,            // stopped on request
  internal,             // our own mistake; should never reach a user
  exhausted,            // tried as often or as long as allowed (a task handed out too often)
  unknown,              // it may or may not have happened (the message says how to find out)
};

std::string_view to_string(errc code);
bool from_string(std::string_view name, errc& code);

struct error {
  errc code = errc::internal;
  std::string message;
};

inline error make_error(errc code, std::string message) { return error{code, std::move(message)}; }

// A value or an error. Small on purpose: `ok()`, `value()`, `error()`, `operator*`, `->`.
template <class T>
class [[nodiscard]] result {
public:
  result(T value) : state_(std::in_place_index<0>, std::move(value)) {}
  result(keel::error err) : state_(std::in_place_index<1>, std::move(err)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(state_); }
  const T& value() const& { assert(ok()); return std::get<0>(state_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const keel::error& error() const { assert(!ok()); return std::get<1>(state_); }

private:
  std::variant<T, keel::error> state_;
};

template <>
class [[nodiscard]] result<void> {
public:
  result() = default;
  result(keel::error err) : error_(std::move(err)), ok_(false) {}
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const keel::error& error() const { assert(!ok_); return error_; }

private:
  keel::error error_;
  bool ok_ = true;
};

inline result<void> success() { return {}; }

} // namespace keel
