#include "runtime/command_template.hpp"

#include <nlohmann/json.hpp>

namespace keel::config {

namespace {

constexpr std::size_t argv_bytes_max = 128 << 10;
constexpr std::size_t argv_elements_max = 4096;

// One element split into literal text and placeholder names (in order); "" on success.
struct piece {
  bool placeholder = false;
  std::string text;  // literal text, or the placeholder's name
};

std::string split(const std::string& element, std::vector<piece>& out) {
  std::string literal;
  for (std::size_t i = 0; i < element.size(); ++i) {
    char c = element[i];
    if (c == '{' && i + 1 < element.size() && element[i + 1] == '{') {
      literal.push_back('{');
      ++i;
    } else if (c == '}' && i + 1 < element.size() && element[i + 1] == '}') {
      literal.push_back('}');
      ++i;
    } else if (c == '{') {
      auto close = element.find('}', i);
      if (close == std::string::npos) return "an unclosed '{' (write \"{{\" for a brace)";
      auto name = element.substr(i + 1, close - i - 1);
      if (name.empty() || name.size() > 64 ||
          name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != std::string::npos)
        return "placeholder {" + name + "} is not a name of letters, digits and '_'";
      if (!literal.empty()) out.push_back({false, std::move(literal)});
      literal.clear();
      out.push_back({true, name});
      i = close;
    } else if (c == '}') {
      return "a lone '}' (write \"}}\" for a brace)";
    } else {
      literal.push_back(c);
    }
  }
  if (!literal.empty()) out.push_back({false, std::move(literal)});
  return {};
}

// The text of a scalar argument, or why it has none.
result<std::string> text_of(const nlohmann::json& v, const std::string& name) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return std::string(v.get<bool>() ? "true" : "false");
  if (v.is_number_integer() || v.is_number_unsigned()) return v.dump();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (d == static_cast<double>(static_cast<long long>(d)) && d > -1e15 && d < 1e15)
      return std::to_string(static_cast<long long>(d));
    return v.dump();
  }
  return make_error(errc::invalid_argument, "argument " + name + " is " + std::string(v.type_name()) +
                                              ", which has no text to put in the command");
}

} // namespace

result<std::vector<std::string>> template_placeholders(const std::vector<std::string>& argv) {
  std::vector<std::string> names;
  if (argv.empty()) return make_error(errc::config, "argv is empty");
  for (std::size_t i = 0; i < argv.size(); ++i) {
    std::vector<piece> pieces;
    if (auto problem = split(argv[i], pieces); !problem.empty())
      return make_error(errc::config, "argv[" + std::to_string(i) + "]: " + problem);
    for (const auto& p : pieces) {
      if (!p.placeholder) continue;
      if (i == 0) return make_error(errc::config, "argv[0] is the program: it takes no placeholder");
      names.push_back(p.text);
    }
  }
  if (argv[0].empty()) return make_error(errc::config, "argv[0] (the program) is empty");
  return names;
}

result<std::vector<std::string>> expand_template(const std::vector<std::string>& argv, const nlohmann::json& arguments) {
  std::vector<std::string> out;
  std::size_t bytes = 0;
  bool after_options = false;  // an earlier element is "--": what follows is never an option
  auto add = [&](std::string element, bool from_literal_dash) -> result<void> {
    if (element.find('\0') != std::string::npos)
      return make_error(errc::invalid_argument, "argument " + std::to_string(out.size()) + " of the command contains a NUL byte");
    if (!after_options && !from_literal_dash && !element.empty() && element[0] == '-')
      return make_error(errc::invalid_argument,
                        "\"" + element.substr(0, 64) + "\" begins with '-': the program would read it as an option "
                        "(the command's argv has no \"--\" before it)");
    bytes += element.size() + 1;
    if (bytes > argv_bytes_max || out.size() >= argv_elements_max)
      return make_error(errc::invalid_argument, "the command would have more than " + std::to_string(argv_bytes_max) +
                                                  " bytes or " + std::to_string(argv_elements_max) + " arguments");
    out.push_back(std::move(element));
    return success();
  };
  auto argument = [&](const std::string& name) -> const nlohmann::json* {
    if (!arguments.is_object()) return nullptr;
    auto it = arguments.find(name);
    if (it == arguments.end() || it->is_null()) return nullptr;
    return &*it;
  };
  for (std::size_t i = 0; i < argv.size(); ++i) {
    std::vector<piece> pieces;
    if (auto problem = split(argv[i], pieces); !problem.empty())
      return make_error(errc::config, "argv[" + std::to_string(i) + "]: " + problem);
    const bool literal_dash = !pieces.empty() && !pieces[0].placeholder && pieces[0].text[0] == '-';
    if (i == 0 || pieces.empty() || (pieces.size() == 1 && !pieces[0].placeholder)) {
      std::string element = pieces.empty() ? std::string{} : pieces[0].text;
      if (auto added = add(element, true); !added) return added.error();
      if (element == "--") after_options = true;
      continue;
    }
    if (pieces.size() == 1) {  // the whole element is one placeholder
      const auto* v = argument(pieces[0].text);
      if (!v) continue;
      if (v->is_array()) {
        for (const auto& item : *v) {
          auto text = text_of(item, pieces[0].text + "[]");
          if (!text) return text.error();
          if (auto added = add(*text, false); !added) return added.error();
        }
        continue;
      }
      auto text = text_of(*v, pieces[0].text);
      if (!text) return text.error();
      if (auto added = add(*text, false); !added) return added.error();
      continue;
    }
    std::string element;
    bool dropped = false;
    for (const auto& p : pieces) {
      if (!p.placeholder) {
        element += p.text;
        continue;
      }
      const auto* v = argument(p.text);
      if (!v) {
        dropped = true;  // "--file={file}" without a file: no element
        break;
      }
      auto text = text_of(*v, p.text);
      if (!text) return text.error();
      element += *text;
    }
    if (dropped) continue;
    if (auto added = add(std::move(element), literal_dash); !added) return added.error();
  }
  return out;
}

} // namespace keel::config
