#include "llm/http_client.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>

namespace keel::llm {

namespace {

struct transfer {
  const http_request* request;
  http_response* response;
  bool stopped = false;
};

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<transfer*>(user);
  std::size_t n = size * count;
  // Errors are read whole even when streaming, so that their message can be reported.
  if (t->request->on_data && t->response->status < 300) {
    if (!t->request->on_data(std::string_view(data, n))) {
      t->stopped = true;
      return 0;
    }
  } else {
    // An error's body is kept for its message: the first 1 MiB of it.
    if (t->response->body.size() >= (1u << 20)) {
      t->stopped = true;
      return 0;
    }
    t->response->body.append(data, std::min<std::size_t>(n, (1u << 20) - t->response->body.size()));
  }
  return n;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<transfer*>(user);
  std::string line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) {
    t->response->headers.clear();
    auto space = line.find(' ');
    if (space != std::string::npos) t->response->status = std::strtol(line.c_str() + space + 1, nullptr, 10);
    return size * count;
  }
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    auto first = value.find_first_not_of(" \t");
    auto last = value.find_last_not_of(" \t\r\n");
    t->response->headers[name] = first == std::string::npos ? "" : value.substr(first, last - first + 1);
  }
  return size * count;
}

} // namespace

result<http_response> http_post(const http_request& request) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return make_error(errc::internal, "libcurl could not start");
  http_response response;
  transfer t{&request, &response};
  curl_slist* headers = nullptr;
  for (const auto& h : request.headers) headers = curl_slist_append(headers, h.c_str());
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers, curl_slist_free_all);
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(request.connect_timeout_ms));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout_ms));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");  // never file://, or another scheme by a redirect
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  CURLcode code = curl_easy_perform(c);
  if (code != CURLE_OK && !(code == CURLE_WRITE_ERROR && t.stopped)) {
    // The URL may carry no secret (keys travel in headers), so it can be named.
    std::string what = std::string(curl_easy_strerror(code)) + " (" + request.url + ")";
    if (code == CURLE_OPERATION_TIMEDOUT) return make_error(errc::timeout, "the model did not answer in time: " + what);
    return make_error(errc::unavailable, "cannot reach the model: " + what);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

} // namespace keel::llm
