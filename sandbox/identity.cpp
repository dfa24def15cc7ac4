#include "sandbox/identity.hpp"

#include <cerrno>
#include <dirent.h>
#include <string_view>
#include <fcntl.h>
#include <cstring>
#include <grp.h>
#include <map>
#include <mutex>
#include <pwd.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace keel::sandbox {

namespace {

result<identity> look_up(const std::string& run_as) {
  if (run_as == "worker") return identity{false, ::geteuid(), ::getegid(), "worker"};
  passwd entry{};
  passwd* found = nullptr;
  char buffer[4096];
  if (::getpwnam_r(run_as.c_str(), &entry, buffer, sizeof buffer, &found) != 0 || !found)
    return make_error(errc::config,
                      "the account " + run_as + " that commands run as does not exist: run scripts/setup.sh, or "
                      "useradd --system --no-create-home --shell /usr/sbin/nologin " + run_as);
  if (found->pw_uid == 0 || found->pw_gid == 0)
    return make_error(errc::config, "the account " + run_as + " is root's uid or gid: commands need one of their own");
  identity id{true, found->pw_uid, found->pw_gid, run_as};
  if (::geteuid() != 0)
    return make_error(errc::config,
                      "commands run as " + run_as + ", which only a worker started as root can do (it is " +
                        "uid " + std::to_string(::geteuid()) + "): start the worker as root, or set the agent's "
                        "sandbox.run_as = \"worker\" to run commands as the worker's own user");
  if (found->pw_uid == ::getuid())
    return make_error(errc::config, "the account " + run_as + " is the worker's own user: commands need one of their own");
  return id;
}

} // namespace

result<identity> command_identity(const std::string& run_as) {
  static std::mutex mutex;
  static std::map<std::string, result<identity>> known;
  std::lock_guard lock(mutex);
  auto it = known.find(run_as);
  if (it == known.end()) it = known.emplace(run_as, look_up(run_as)).first;
  return it->second;
}

int become(const identity& id, const char** failed_step) noexcept {
  if (!id.distinct) return 0;
  if (::syscall(SYS_setgroups, 0, nullptr) != 0) {
    *failed_step = "dropping supplementary groups";
    return errno;
  }
  if (::syscall(SYS_setresgid, id.gid, id.gid, id.gid) != 0) {
    *failed_step = "taking the command's gid";
    return errno;
  }
  if (::syscall(SYS_setresuid, id.uid, id.uid, id.uid) != 0) {
    *failed_step = "taking the command's uid";
    return errno;
  }
  return 0;
}

acting_as::acting_as(const identity& id) {
  if (!id.distinct) return;
  // setfsuid and setfsgid change the calling thread only; they answer the previous value.
  gid_ = static_cast<gid_t>(::setfsgid(id.gid));
  uid_ = static_cast<uid_t>(::setfsuid(id.uid));
  switched_ = true;
}

acting_as::~acting_as() {
  if (!switched_) return;
  ::setfsuid(uid_);
  ::setfsgid(gid_);
}

result<void> hand_over(int fd, const identity& id) {
  if (!id.distinct) return success();
  struct stat st{};
  if (::fstat(fd, &st) != 0) return make_error(errc::io, std::string("fstat: ") + std::strerror(errno));
  if (st.st_uid == id.uid && st.st_gid == id.gid) return success();
  // Only an empty directory changes hands: the owner of a directory may remove or replace
  // anything in it, and what a person put there stays theirs.
  int listed = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (listed < 0) return make_error(errc::io, std::string("cannot open the workspace: ") + std::strerror(errno));
  DIR* dir = ::fdopendir(listed);
  if (!dir) {
    ::close(listed);
    return make_error(errc::io, std::string("cannot list the workspace: ") + std::strerror(errno));
  }
  bool empty = true;
  while (auto* entry = ::readdir(dir)) {
    std::string_view name = entry->d_name;
    if (name != "." && name != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(dir);
  if (!empty) return success();
  // A set-group-id bit (from a parent that has it) would pass to every directory made inside.
  if ((st.st_mode & (S_ISGID | S_ISUID)) &&
      ::chmod(("/proc/self/fd/" + std::to_string(fd)).c_str(), st.st_mode & 0777) != 0)
    return make_error(errc::io, std::string("cannot clear the workspace's set-id bits: ") + std::strerror(errno));
  if (::fchownat(fd, "", id.uid, id.gid, AT_EMPTY_PATH) != 0)
    return make_error(errc::io, "cannot give the workspace to " + id.name + ": " + std::strerror(errno));
  return success();
}

result<void> check_reachable(const std::string& path, const identity& id) {
  if (!id.distinct) return success();
  std::string prefix;
  std::size_t at = 0;
  while (at < path.size()) {
    auto next = path.find('/', at + 1);
    std::string dir = path.substr(0, next == std::string::npos ? path.size() : next);
    if (dir.empty()) dir = "/";
    at = next == std::string::npos ? path.size() : next;
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0) continue;
    bool searchable = (st.st_uid == id.uid) ? (st.st_mode & S_IXUSR)
                      : (st.st_gid == id.gid) ? (st.st_mode & S_IXGRP)
                                              : (st.st_mode & S_IXOTH);
    if (!searchable)
      return make_error(errc::unavailable,
                        "commands run as " + id.name + ", which cannot reach the workspace " + path + ": " + dir +
                          " is not searchable by it (chmod o+x " + dir + ", or put the workspace elsewhere)");
  }
  return success();
}

} // namespace keel::sandbox
