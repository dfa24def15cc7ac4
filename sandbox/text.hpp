// Text hygiene for what tools return: ANSI escapes stripped, invalid UTF-8 replaced, long output
// cut to its head and tail with a marker, and edits shown as unified diffs.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <cstdint>
#include <optional>
#include <vector>

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

// Where `pattern` occurs in `text` (overlaps included), at most `count_max` of them, in time
// linear in both (Knuth-Morris-Pratt: no input makes it slower). nullopt when the steady clock
// passed `deadline_ms` (0: none) before the search was done.
std::optional<std::vector<std::size_t>> find_occurrences(std::string_view text, std::string_view pattern,
                                                         std::size_t count_max, std::int64_t deadline_ms);

// The unified diff of replacing `old_text` at byte `offset` of `before` by `new_text`.
std::string edit_diff(const std::string& path, const std::string& before, std::size_t offset,
                      const std::string& old_text, const std::string& new_text);

// Whether a code point changes how text reads without showing itself: controls (C0, DEL, C1),
// format characters (bidi embeddings, overrides and isolates, zero-width ones, word joiner,
// BOM, tags), line and paragraph separators, spaces other than U+0020, Hangul fillers,
// variation selectors.
bool is_hidden_code_point(std::uint32_t code);

// Every hidden code point shown as an escape (\n, \r, \t, \x1b, \u2066, \U000e0041), so that
// what a person is asked to approve reads as what will run; valid UTF-8 otherwise kept.
std::string escape_controls(std::string_view text);

// A field of a form as a person is shown it: escaped, runs of more than 8 spaces shown by their
// count, and past `chars_max` its start and its end with the count of what is between.
std::string shown_field(std::string_view text, std::size_t chars_max = 2000);

} // namespace keel::sandbox
