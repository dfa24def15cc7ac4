#include "tests/e2e/http_client.hpp"

#include <strings.h>

#include "gateway/tokens.hpp"
#include "tests/support/test_support.hpp"

#include <curl/curl.h>

#include <mutex>

namespace {
// libcurl's global state, set up once before any thread makes a handle (curl_easy_init would
// otherwise do it lazily, which is not safe from several threads at once).
const bool curl_ready = curl_global_init(CURL_GLOBAL_ALL) == CURLE_OK;
} // namespace

namespace keel::testing {

namespace {
std::mutex authorization_mutex;
std::string default_authorization;
} // namespace

std::string default_authorization_header() {
  std::lock_guard lock{authorization_mutex};
  return default_authorization;
}

std::string write_gateway_token(const std::string& path, const std::string& name) {
  auto token = gateway::random_token();
  if (!gateway::write_tokens_file(path, {{name, gateway::token_hash(token)}})) return {};
  return token;
}

void set_default_authorization(const std::string& header) {
  std::lock_guard lock{authorization_mutex};
  default_authorization = header;
}

http_answer call(const std::string& method, const std::string& url, const std::string& body,
                 const std::vector<std::string>& extra_headers) {
  http_answer out;
  CURL* curl = curl_easy_init();
  if (!curl) {
    out.body = "curl_easy_init failed";
    return out;
  }
  // JSON unless the test names a type of its own ("Content-Type:" alone sends none).
  bool typed = false;
  for (const auto& h : extra_headers)
    if (h.size() >= 13 && strncasecmp(h.c_str(), "content-type:", 13) == 0) typed = true;
  curl_slist* headers = typed ? nullptr : curl_slist_append(nullptr, "Content-Type: application/json");
  bool authorized = false;
  for (const auto& h : extra_headers)
    if (h.size() >= 14 && strncasecmp(h.c_str(), "authorization:", 14) == 0) authorized = true;
  if (!authorized) {
    std::lock_guard lock{authorization_mutex};
    if (!default_authorization.empty()) headers = curl_slist_append(headers, default_authorization.c_str());
  }
  for (const auto& h : extra_headers) headers = curl_slist_append(headers, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (method == "POST") curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 20000L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* to) {
    static_cast<std::string*>(to)->append(data, size * count);
    return size * count;
  });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, +[](char* data, size_t size, size_t count, void* to) {
    std::string line(data, size * count);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
      while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
      (*static_cast<std::map<std::string, std::string>*>(to))[name] = value;
    }
    return size * count;
  });
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &out.headers);
  auto code = curl_easy_perform(curl);
  if (code == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out.status);
  } else {
    out.status = 0;
    out.headers.clear();
    out.body = std::string("no answer: ") + curl_easy_strerror(code);
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return out;
}

// The status of a GET, or 0 while nothing listens there.
long status_of_get(const std::string& url) {
  CURL* curl = curl_easy_init();
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, +[](char*, size_t size, size_t count, void*) { return size * count; });
  curl_slist* headers = nullptr;
  if (auto a = default_authorization_header(); !a.empty()) headers = curl_slist_append(headers, a.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  long status = 0;
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  curl_slist_free_all(headers);
  return status;
}

} // namespace keel::testing
