// The argv of a command tool ([agents.<id>.commands.<name>]) with placeholders the model fills:
// an element that is exactly "{x}" becomes argument x (nothing when x is absent or null, one
// element per item when it is an array); "{x}" inside an element becomes x's text ("{{" and "}}"
// are literal braces). No shell reads the result, so no value can add a command, a redirection
// or a glob; a value that would begin an element with '-' (and so be read as an option) is
// refused unless an earlier element is "--".
#pragma once

#include "runtime/result.hpp"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace keel::config {

// The names of the placeholders in `argv`, or why it is not a valid template (an unclosed brace,
// a placeholder in the program's own element, a name that is not [A-Za-z0-9_]).
result<std::vector<std::string>> template_placeholders(const std::vector<std::string>& argv);

// `argv` with the arguments in place (checked against the tool's schema before).
result<std::vector<std::string>> expand_template(const std::vector<std::string>& argv, const nlohmann::json& arguments);

} // namespace keel::config
