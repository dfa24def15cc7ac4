// The gateway's HTTP API (docs/HTTP.md): JSON over HTTP in front, the wire protocol over NATS
// behind. It keeps no state: every answer comes from the orchestrators.
#pragma once

#include "broker/connection.hpp"
#include "gateway/http_server.hpp"
#include "gateway/run_stream.hpp"
#include "gateway/tokens.hpp"
#include "runtime/config.hpp"
#include "runtime/wire.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace keel::gateway {

struct api_options {
  broker::subjects subjects;
  std::string token;                   // gateway.token, recorded as token_name
  std::string token_name = "operator";
  std::string tokens_file;             // named tokens (gateway/tokens.hpp); with no token at all, nothing is served
  std::vector<std::string> hosts;      // names answered besides localhost and IP addresses
  std::int64_t request_timeout_ms = 5000;
  std::int64_t list_wait_ms = 300;     // how long a listing collects the orchestrators' answers
  stream_options streams;
  std::string dashboard_dir;           // the dashboard's files; empty: the API only
  std::vector<config::webhook_config> webhooks;  // POST /hooks/<name> (docs/WORKFLOWS.md)
};

class api {
public:
  api(std::shared_ptr<broker::connection> nats, api_options options);
  ~api();
  void handle(http_request request, const responder& respond);
  // Ends every stream (a stopping gateway).
  void stop();
  std::size_t streams() const;
  // Who a request is, for the server's per-client bound: the token's name when it carries a
  // known token, else its address.
  std::string client_of(const http_request& request);

private:
  result<std::vector<wire::value>> collect(const std::string& subject, const wire::value& body,
                                           bool orchestrators_only = true);
  void on_heartbeat(const std::string& bytes);
  std::size_t live_count(bool orchestrators_only) const;
  std::vector<std::string> recent_ids(bool orchestrators_only, std::int64_t within_ms) const;
  // The live orchestrators in turn (round robin), for invokes: the queue group alone would give
  // every invoke to an orchestrator on the gateway's own nats-server when there is one.
  std::string next_orchestrator();
  result<wire::value> invoke(const wire::value& body, const std::string& who);
  // One request and its reply; a reply of type "error" is the error it carries.
  result<wire::value> ask(const std::string& subject, const wire::value& body);
  static result<wire::value> answer_of(result<broker::message> reply);
  void list(const http_request& request, const std::map<std::string, std::string>& query, const responder& respond);
  void agents(const responder& respond);
  // Forks, reruns, replays and bulk actions (api_actions.cpp, docs/FORKS.md); false: not one of theirs.
  bool actions(const std::string& who, const std::vector<std::string>& parts, const http_request& request,
               const responder& respond);
  result<wire::value> bulk(const std::string& who, const wire::value& body);
  void stream(const http_request& request, const std::string& run, const std::map<std::string, std::string>& query,
              const responder& respond);
  std::shared_ptr<broker::connection> nats_;
  api_options options_;
  std::unique_ptr<token_book> tokens_;
  std::shared_ptr<run_streams> streams_;
  struct live_node {
    bool orchestrator = false;
    std::int64_t until_ms = 0;  // steady time past which it is taken for gone
    std::int64_t seen_ms = 0;   // its last heartbeat
  };
  mutable std::mutex live_mutex_;
  std::map<std::string, live_node> live_;
  std::size_t turn_ = 0;  // guarded by live_mutex_
  std::unique_ptr<broker::subscription> heartbeats_;
};

// The HTTP status for an error code of the protocol.
int status_of(errc code);

// Answers as every route gives them (api.cpp): JSON with the security headers, an error's JSON,
// and the body of a request that acts (a body naming `by` is refused: the token's name acts).
http_response json(int status, const wire::value& body);
http_response failure(const keel::error& e);
result<wire::value> acting_body(const http_request& request);

} // namespace keel::gateway
