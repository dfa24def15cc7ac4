#include "runtime/run_state.hpp"

namespace keel::store {

using wire::value;

namespace {

// Reads fields of one map, each checked; the first error names the field's path.
class fields {
public:
  fields(const value& map, std::string where) : map_(map), where_(std::move(where)) {}

  bool is_map() const { return map_.is_object(); }
  bool has(const char* key) const { return map_.is_object() && map_.contains(key) && !map_[key].is_null(); }
  const value& raw(const char* key) const {
    static const value null;
    return has(key) ? map_[key] : null;
  }
  std::string path(const char* key) const { return where_ + "." + key; }

  result<std::string> text(const char* key, std::string fallback = {}) const {
    if (!has(key)) return fallback;
    if (!map_[key].is_string()) return bad(key, "a string");
    return map_[key].get<std::string>();
  }
  result<std::optional<std::string>> optional_text(const char* key) const {
    if (!has(key)) return std::optional<std::string>{};
    if (!map_[key].is_string()) return bad(key, "a string");
    return std::optional<std::string>(map_[key].get<std::string>());
  }
  result<std::uint64_t> count(const char* key, std::uint64_t fallback = 0) const {
    if (!has(key)) return fallback;
    const value& v = map_[key];
    // Decoded MessagePack gives unsigned numbers; a value built in memory may hold signed ones.
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0))
      return bad(key, "an unsigned integer");
    return v.get<std::uint64_t>();
  }
  result<std::int64_t> integer(const char* key, std::int64_t fallback = 0) const {
    if (!has(key)) return fallback;
    if (!map_[key].is_number_integer()) return bad(key, "an integer");
    return map_[key].get<std::int64_t>();
  }
  result<bool> flag(const char* key, bool fallback = false) const {
    if (!has(key)) return fallback;
    if (!map_[key].is_boolean()) return bad(key, "true or false");
    return map_[key].get<bool>();
  }
  keel::error bad(const char* key, const char* expected) const {
    // (Asked about a key that is not there too: a field that defaults, then fails a later check.)
    std::string given = map_.is_object() && map_.contains(key) ? map_[key].dump().substr(0, 80) : std::string("absent");
    return make_error(errc::malformed, "the run's stored state is damaged: " + path(key) + " should be " + expected +
                                         ", not " + given);
  }

private:
  const value& map_;
  std::string where_;
};

#define KEEL_READ(target, expr)             \
  do {                                      \
    auto read_ = (expr);                    \
    if (!read_) return read_.error();       \
    target = std::move(*read_);             \
  } while (false)

value to_value(const token_usage& u) {
  return value{{"input_tokens", u.input_tokens}, {"output_tokens", u.output_tokens},
               {"cache_read_tokens", u.cache_read_tokens}, {"cache_write_tokens", u.cache_write_tokens}};
}

result<token_usage> usage_from(const value& v, const std::string& where) {
  token_usage u;
  if (v.is_null()) return u;
  fields f(v, where);
  if (!f.is_map()) return make_error(errc::malformed, "the run's stored state is damaged: " + where + " should be a map");
  KEEL_READ(u.input_tokens, f.integer("input_tokens"));
  KEEL_READ(u.output_tokens, f.integer("output_tokens"));
  KEEL_READ(u.cache_read_tokens, f.integer("cache_read_tokens"));
  KEEL_READ(u.cache_write_tokens, f.integer("cache_write_tokens"));
  return u;
}

keel::error not_a(const std::string& where, const char* what) {
  return make_error(errc::malformed, "the run's stored state is damaged: " + where + " should be " + what);
}

} // namespace

value to_value(const pending_step& p) {
  value out{{"step", p.step}, {"attempt", p.attempt}, {"kind", p.model ? "llm" : "tool"}, {"approved", p.approved}};
  if (!p.form.is_null()) out["form"] = p.form;
  if (p.failing_since_ms > 0) {
    out["failing_since_ms"] = p.failing_since_ms;
    out["failures"] = p.failures;
    out["waited_ms"] = p.waited_ms;
  }
  if (p.retry) out["retry"] = value{{"reason", p.retry->reason}, {"next_try_ms", p.retry->next_try_ms}, {"waiting", p.retry->waiting}};
  if (!p.queue.empty()) out["queue"] = p.queue;
  if (p.deadline_ms > 0) out["deadline_ms"] = p.deadline_ms;
  if (!p.sub_agent.empty()) out["sub_agent"] = p.sub_agent;
  return out;
}

result<pending_step> pending_step_from_value(const value& v, const std::string& where) {
  fields f(v, where);
  if (!f.is_map()) return not_a(where, "a map");
  pending_step p;
  KEEL_READ(p.step, f.count("step"));
  std::uint64_t attempt = 1;
  KEEL_READ(attempt, f.count("attempt", 1));
  if (attempt == 0 || attempt > UINT32_MAX) return f.bad("attempt", "an attempt number");
  p.attempt = static_cast<std::uint32_t>(attempt);
  std::string kind;
  KEEL_READ(kind, f.text("kind", "llm"));
  if (kind != "llm" && kind != "tool") return f.bad("kind", "llm or tool");
  p.model = kind == "llm";
  KEEL_READ(p.approved, f.flag("approved"));
  p.form = f.raw("form");
  KEEL_READ(p.failing_since_ms, f.integer("failing_since_ms"));
  std::uint64_t failures = 0;
  KEEL_READ(failures, f.count("failures"));
  p.failures = static_cast<std::uint32_t>(std::min<std::uint64_t>(failures, UINT32_MAX));
  KEEL_READ(p.waited_ms, f.integer("waited_ms"));
  KEEL_READ(p.queue, f.text("queue"));
  KEEL_READ(p.deadline_ms, f.integer("deadline_ms"));
  KEEL_READ(p.sub_agent, f.text("sub_agent"));
  if (f.has("retry")) {
    fields r(f.raw("retry"), f.path("retry"));
    if (!r.is_map()) return not_a(f.path("retry"), "a map");
    step_retry retry;
    KEEL_READ(retry.reason, r.text("reason"));
    KEEL_READ(retry.next_try_ms, r.integer("next_try_ms"));
    KEEL_READ(retry.waiting, r.text("waiting"));
    p.retry = retry;
  }
  return p;
}

value to_value(const suspension& w) {
  value out{{"step_key", w.step_key}, {"call_index", w.call_index}, {"form", w.form}};
  if (w.expires_ms > 0) out["expires_ms"] = w.expires_ms;
  if (w.escalate_ms > 0) out["escalate_ms"] = w.escalate_ms;
  if (!w.escalated_to.empty()) out["escalated_to"] = w.escalated_to;
  return out;
}

value to_value(const run_state& s) {
  value calls = value::array();
  for (const auto& c : s.calls) calls.push_back(value{{"id", c.id}, {"name", c.name}, {"arguments", c.arguments}});
  value answers = value::object();
  for (const auto& [key, a] : s.answers) answers[key] = value{{"approved", a.approved}, {"feedback", a.feedback}};
  value rules = value::array();
  for (const auto& r : s.allow_rules) rules.push_back(value{{"kind", r.kind}, {"command", r.command}});
  value out{{"input", s.input},
            {"messages_count", s.messages_count},
            {"steps", s.steps},
            {"usage", to_value(s.usage)},
            {"task_seq", s.task_seq},
            {"pending", s.pending ? to_value(*s.pending) : value()},
            {"calls", calls},
            {"call_index", s.call_index},
            {"suspended", s.suspended ? to_value(*s.suspended) : value()},
            {"answers", answers},
            {"allow_rules", rules},
            {"last_text", s.last_text}};
  if (!s.started_by.empty()) out["started_by"] = s.started_by;
  if (!s.provider.empty()) out["provider"] = s.provider;
  if (!s.model.empty()) out["model"] = s.model;
  if (s.output) out["output"] = *s.output;
  if (s.stop_reason) out["stop_reason"] = *s.stop_reason;
  if (s.error) out["error"] = *s.error;
  if (s.failed_pending) out["failed_pending"] = to_value(*s.failed_pending);
  if (s.parent.is_object()) out["parent"] = s.parent;
  if (s.children.is_array() && !s.children.empty()) out["children"] = s.children;
  if (s.children_usage.input_tokens || s.children_usage.output_tokens) out["children_usage"] = to_value(s.children_usage);
  if (s.cost_usd > 0) out["cost_usd"] = s.cost_usd;
  if (s.children_cost_usd > 0) out["children_cost_usd"] = s.children_cost_usd;
  if (s.waiting)
    out["waiting"] = value{{"kind", s.waiting->kind}, {"call_index", s.waiting->call_index}, {"event", s.waiting->event},
                           {"until_ms", s.waiting->until_ms}, {"since_ms", s.waiting->since_ms}};
  if (!s.signals.empty()) {
    value list = value::array();
    for (const auto& g : s.signals)
      list.push_back(value{{"id", g.id}, {"name", g.name}, {"payload", g.payload}, {"by", g.by}, {"at_ms", g.at_ms}});
    out["signals"] = list;
  }
  if (!s.signal_ids.empty()) out["signal_ids"] = s.signal_ids;
  if (s.deadline_ms > 0) out["deadline_ms"] = s.deadline_ms;
  if (s.join) {
    value children = value::array();
    for (const auto& c : s.join->children)
      children.push_back(value{{"agent", c.agent}, {"task", c.task}, {"run_id", c.run_id}, {"outcome", c.outcome}});
    out["join"] = value{{"step", s.join->step}, {"wait", s.join->wait}, {"cancel_rest", s.join->cancel_rest},
                        {"deadline_ms", s.join->deadline_ms}, {"check_ms", s.join->check_ms}, {"checks", s.join->checks},
                        {"children", children}};
  }
  if (s.fork.is_object()) out["fork"] = s.fork;
  if (s.system_prompt) out["system_prompt"] = *s.system_prompt;
  if (!s.preset_answers.empty()) {
    value preset = value::object();
    for (const auto& [id, a] : s.preset_answers) preset[id] = value{{"approved", a.approved}, {"feedback", a.feedback}};
    out["preset_answers"] = preset;
  }
  if (s.replayed_events.is_array() && !s.replayed_events.empty()) out["replayed_events"] = s.replayed_events;
  if (s.queue)
    out["queue"] = value{{"name", s.queue->name}, {"key", s.queue->key}, {"since_ms", s.queue->since_ms},
                         {"admitted_ms", s.queue->admitted_ms}};
  return out;
}

std::int64_t next_wake_ms(const run_state& s, bool ended) {
  if (ended) return 0;
  std::int64_t next = 0;
  auto consider = [&](std::int64_t t) {
    if (t > 0 && (next == 0 || t < next)) next = t;
  };
  if (s.waiting) consider(s.waiting->until_ms);
  if (s.waiting && s.waiting->kind == "join" && s.join) {
    consider(s.join->check_ms);
    consider(s.join->deadline_ms);
  }
  if (s.suspended) {
    consider(s.suspended->expires_ms);
    if (s.suspended->escalated_to.empty()) consider(s.suspended->escalate_ms);
  }
  consider(s.deadline_ms);
  return next;
}

result<run_state> run_state_from_value(const value& v) {
  fields f(v, "state");
  if (!f.is_map()) return not_a("state", "a map");
  run_state s;
  s.input = f.raw("input");
  if (f.has("messages")) {
    if (!f.raw("messages").is_array()) return f.bad("messages", "a list");
    s.messages_count = f.raw("messages").size();
  } else {
    KEEL_READ(s.messages_count, f.count("messages_count"));
  }
  KEEL_READ(s.steps, f.integer("steps"));
  KEEL_READ(s.usage, usage_from(f.raw("usage"), f.path("usage")));
  KEEL_READ(s.task_seq, f.count("task_seq"));
  if (f.has("pending")) KEEL_READ(s.pending, pending_step_from_value(f.raw("pending"), f.path("pending")));
  if (f.has("failed_pending"))
    KEEL_READ(s.failed_pending, pending_step_from_value(f.raw("failed_pending"), f.path("failed_pending")));
  if (f.has("calls")) {
    if (!f.raw("calls").is_array()) return f.bad("calls", "a list");
    std::size_t i = 0;
    for (const auto& c : f.raw("calls")) {
      fields call(c, f.path("calls") + "[" + std::to_string(i++) + "]");
      if (!call.is_map()) return not_a(call.path("").substr(0, call.path("").size() - 1), "a map");
      tool_call t;
      KEEL_READ(t.id, call.text("id"));
      KEEL_READ(t.name, call.text("name"));
      t.arguments = call.raw("arguments");
      s.calls.push_back(std::move(t));
    }
  }
  KEEL_READ(s.call_index, f.count("call_index"));
  if (s.call_index > s.calls.size()) return f.bad("call_index", "at most the number of calls");
  if (f.has("suspended")) {
    fields w(f.raw("suspended"), f.path("suspended"));
    if (!w.is_map()) return not_a(f.path("suspended"), "a map");
    suspension susp;
    KEEL_READ(susp.step_key, w.text("step_key"));
    KEEL_READ(susp.call_index, w.count("call_index"));
    if (susp.call_index >= s.calls.size()) return w.bad("call_index", "the index of one of the calls");
    susp.form = w.raw("form");
    KEEL_READ(susp.expires_ms, w.integer("expires_ms"));
    KEEL_READ(susp.escalate_ms, w.integer("escalate_ms"));
    KEEL_READ(susp.escalated_to, w.text("escalated_to"));
    s.suspended = std::move(susp);
  }
  if (f.has("answers")) {
    if (!f.raw("answers").is_object()) return f.bad("answers", "a map");
    for (auto it = f.raw("answers").begin(); it != f.raw("answers").end(); ++it) {
      fields a(it.value(), f.path("answers") + "." + it.key());
      if (!a.is_map()) return not_a(f.path("answers") + "." + it.key(), "a map");
      answer given;
      KEEL_READ(given.approved, a.flag("approved"));
      KEEL_READ(given.feedback, a.text("feedback"));
      s.answers[it.key()] = std::move(given);
    }
  }
  for (const char* key : {"allow_rules", "allow_patterns"}) {
    if (!f.has(key)) continue;
    if (!f.raw(key).is_array()) return f.bad(key, "a list");
    for (const auto& r : f.raw(key)) {
      // allow_patterns (older runs): exact commands as strings.
      if (r.is_string()) {
        s.allow_rules.push_back({"exact", r.get<std::string>()});
        continue;
      }
      fields rule(r, f.path(key));
      if (!rule.is_map()) return not_a(f.path(key), "a list of rules");
      remembered_rule given;
      KEEL_READ(given.kind, rule.text("kind", "exact"));
      KEEL_READ(given.command, rule.text("command"));
      if (given.kind != "exact" && given.kind != "prefix") return rule.bad("kind", "exact or prefix");
      s.allow_rules.push_back(std::move(given));
    }
  }
  KEEL_READ(s.started_by, f.text("started_by"));
  KEEL_READ(s.provider, f.text("provider"));
  KEEL_READ(s.model, f.text("model"));
  KEEL_READ(s.last_text, f.text("last_text"));
  KEEL_READ(s.output, f.optional_text("output"));
  KEEL_READ(s.stop_reason, f.optional_text("stop_reason"));
  KEEL_READ(s.error, f.optional_text("error"));
  if (f.has("parent")) {
    if (!f.raw("parent").is_object()) return f.bad("parent", "a map");
    s.parent = f.raw("parent");
  }
  if (f.has("children")) {
    if (!f.raw("children").is_array()) return f.bad("children", "a list");
    s.children = f.raw("children");
  }
  if (f.has("children_usage")) KEEL_READ(s.children_usage, usage_from(f.raw("children_usage"), f.path("children_usage")));
  for (auto [key, field] : {std::pair{"cost_usd", &s.cost_usd}, std::pair{"children_cost_usd", &s.children_cost_usd}}) {
    if (!f.has(key)) continue;
    if (!f.raw(key).is_number() || !(f.raw(key).get<double>() >= 0)) return f.bad(key, "a number of at least 0");
    *field = f.raw(key).get<double>();
  }
  if (f.has("waiting")) {
    fields w(f.raw("waiting"), f.path("waiting"));
    if (!w.is_map()) return not_a(f.path("waiting"), "a map");
    wait_state wait;
    KEEL_READ(wait.kind, w.text("kind"));
    if (wait.kind != "sleep" && wait.kind != "event" && wait.kind != "join") return w.bad("kind", "sleep, event or join");
    KEEL_READ(wait.call_index, w.count("call_index"));
    if (wait.call_index >= s.calls.size()) return w.bad("call_index", "the index of one of the calls");
    KEEL_READ(wait.event, w.text("event"));
    KEEL_READ(wait.until_ms, w.integer("until_ms"));
    KEEL_READ(wait.since_ms, w.integer("since_ms"));
    s.waiting = std::move(wait);
  }
  if (f.has("signals")) {
    if (!f.raw("signals").is_array()) return f.bad("signals", "a list");
    for (const auto& g : f.raw("signals")) {
      fields one(g, f.path("signals"));
      if (!one.is_map()) return not_a(f.path("signals"), "a list of maps");
      signal_record kept;
      KEEL_READ(kept.id, one.text("id"));
      KEEL_READ(kept.name, one.text("name"));
      kept.payload = one.raw("payload");
      KEEL_READ(kept.by, one.text("by"));
      KEEL_READ(kept.at_ms, one.integer("at_ms"));
      s.signals.push_back(std::move(kept));
    }
  }
  if (f.has("signal_ids")) {
    if (!f.raw("signal_ids").is_array()) return f.bad("signal_ids", "a list");
    for (const auto& id : f.raw("signal_ids")) {
      if (!id.is_string()) return f.bad("signal_ids", "a list of strings");
      s.signal_ids.push_back(id.get<std::string>());
    }
  }
  KEEL_READ(s.deadline_ms, f.integer("deadline_ms"));
  if (f.has("join")) {
    fields j(f.raw("join"), f.path("join"));
    if (!j.is_map()) return not_a(f.path("join"), "a map");
    join_state join;
    KEEL_READ(join.step, j.count("step"));
    KEEL_READ(join.wait, j.text("wait", "all"));
    if (join.wait != "all" && join.wait != "first") return j.bad("wait", "all or first");
    if (j.has("cancel_rest")) {
      if (!j.raw("cancel_rest").is_boolean()) return j.bad("cancel_rest", "a boolean");
      join.cancel_rest = j.raw("cancel_rest").get<bool>();
    }
    KEEL_READ(join.deadline_ms, j.integer("deadline_ms"));
    KEEL_READ(join.check_ms, j.integer("check_ms"));
    KEEL_READ(join.checks, j.count("checks"));
    if (!j.raw("children").is_array()) return j.bad("children", "a list");
    for (const auto& c : j.raw("children")) {
      fields one(c, j.path("children"));
      if (!one.is_map()) return not_a(j.path("children"), "a list of maps");
      join_child child;
      KEEL_READ(child.agent, one.text("agent"));
      KEEL_READ(child.task, one.text("task"));
      KEEL_READ(child.run_id, one.text("run_id"));
      child.outcome = one.has("outcome") ? one.raw("outcome") : value();
      join.children.push_back(std::move(child));
    }
    s.join = std::move(join);
  }
  if (f.has("fork")) {
    if (!f.raw("fork").is_object()) return f.bad("fork", "a map");
    s.fork = f.raw("fork");
  }
  KEEL_READ(s.system_prompt, f.optional_text("system_prompt"));
  if (f.has("preset_answers")) {
    if (!f.raw("preset_answers").is_object()) return f.bad("preset_answers", "a map");
    for (auto it = f.raw("preset_answers").begin(); it != f.raw("preset_answers").end(); ++it) {
      fields a(it.value(), f.path("preset_answers") + "." + it.key());
      if (!a.is_map()) return not_a(f.path("preset_answers") + "." + it.key(), "a map");
      answer given;
      KEEL_READ(given.approved, a.flag("approved"));
      KEEL_READ(given.feedback, a.text("feedback"));
      s.preset_answers[it.key()] = std::move(given);
    }
  }
  if (f.has("replayed_events")) {
    if (!f.raw("replayed_events").is_array()) return f.bad("replayed_events", "a list");
    s.replayed_events = f.raw("replayed_events");
  }
  if (f.has("queue")) {
    fields q(f.raw("queue"), f.path("queue"));
    if (!q.is_map()) return not_a(f.path("queue"), "a map");
    queue_place place;
    KEEL_READ(place.name, q.text("name"));
    KEEL_READ(place.key, q.text("key"));
    KEEL_READ(place.since_ms, q.integer("since_ms"));
    KEEL_READ(place.admitted_ms, q.integer("admitted_ms"));
    s.queue = std::move(place);
  }
  return s;
}

} // namespace keel::store
