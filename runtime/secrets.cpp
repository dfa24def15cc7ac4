#include "runtime/secrets.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace keel {

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  std::size_t got = 0;
  while (got < raw.size()) {
    auto n = ::getrandom(raw.data() + got, raw.size() - got, 0);
    if (n > 0) got += static_cast<std::size_t>(n);
  }
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes);
  for (auto b : raw) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

result<void> write_private_file(const std::string& path, std::string_view content) {
  auto temporary = path + ".tmp-" + random_hex(4);
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return make_error(errc::io, "cannot write " + temporary + ": " + std::strerror(errno));
  bool ok = ::fchmod(fd, 0600) == 0;  // whatever the umask left out
  for (std::size_t done = 0; ok && done < content.size();) {
    auto n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(temporary.c_str(), path.c_str()) != 0) {
    auto why = std::string(std::strerror(errno));
    ::unlink(temporary.c_str());
    return make_error(errc::io, "cannot write " + path + ": " + why);
  }
  return success();
}

std::string account_name() {
  std::string name;
  if (auto* pw = ::getpwuid(::getuid()); pw && pw->pw_name) name = pw->pw_name;
  std::string out;
  for (char ch : name.substr(0, 64))
    out += ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-') ? ch : '_';
  return out.empty() ? std::string("someone") : out;
}

} // namespace keel
