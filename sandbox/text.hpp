// Text hygiene for what tools return: ANSI escapes stripped, invalid UTF-8 replaced, long output
// cut to its head and tail with a marker, and edits shown as unified diffs.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace keel::sandbox {

std::string strip_ansi(std::string_view text);
// Replaces every invalid UTF-8 sequence with U+FFFD.
std::string sanitize_utf8(std::string_view text);

// Keeps the first 20% and the last 80% of `chars_max` bytes of a stream of unknown length,
// counting what falls between.
class head_tail_buffer {
public:
  explicit head_tail_buffer(std::size_t chars_max);
  void append(std::string_view data);
  std::size_t total() const { return total_; }
  std::size_t cut() const;
  // The kept text with a marker where bytes were cut.
  std::string text() const;

private:
  std::size_t head_max_;
  std::size_t tail_max_;
  std::string head_;
  std::string tail_;  // a ring: tail_start_ is its oldest byte once full
  std::size_t tail_start_ = 0;
  std::size_t total_ = 0;
};

// The unified diff of replacing `old_text` at byte `offset` of `before` by `new_text`.
std::string edit_diff(const std::string& path, const std::string& before, std::size_t offset,
                      const std::string& old_text, const std::string& new_text);

// Control characters (C0, DEL, C1) shown as escapes (\n, \r, \t, \x1b, \u0085), so that what
// a person is asked to approve reads as what will run; valid UTF-8 otherwise kept.
std::string escape_controls(std::string_view text);

} // namespace keel::sandbox
