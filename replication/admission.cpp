#include "replication/admission.hpp"

#include "runtime/wire.hpp"

namespace keel::replication {

std::string gate_subject(std::string_view run_subject, int gate) {
  auto domain_prefix = run_subject.substr(0, run_subject.rfind('.'));
  return std::string(domain_prefix) + "._admit-" + std::to_string(gate);
}

std::vector<std::string> gate_subjects(const std::string& domain_prefix) {
  std::vector<std::string> out;
  for (int g = 0; g < admission_gates; ++g) out.push_back(domain_prefix + "._admit-" + std::to_string(g));
  return out;
}

bool is_gate_token(std::string_view token) { return !token.empty() && token.front() == '_'; }

std::string encode_admission(const std::string& by, const std::vector<std::string>& runs) {
  auto list = wire::value::array();
  for (const auto& r : runs) list.push_back(r);
  return wire::pack(wire::value{{"admit", std::move(list)}, {"by", by}});
}

std::optional<admission> decode_admission(const std::string& data) {
  auto v = wire::unpack(data);
  if (!v || !v->is_object() || !v->contains("admit") || !(*v)["admit"].is_array() || !v->contains("by") ||
      !(*v)["by"].is_string())
    return std::nullopt;
  admission a;
  a.by = (*v)["by"].get<std::string>();
  for (const auto& r : (*v)["admit"]) {
    if (!r.is_string()) return std::nullopt;
    a.runs.push_back(r.get<std::string>());
  }
  return a;
}

} // namespace keel::replication
