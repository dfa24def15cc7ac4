# Writes a C++ file that holds the given files' bytes (the dashboard, served by the gateway), so
# that a node needs nothing beside its binary. Run as: cmake -DOUT=<file.cpp> -DBASE=<dir>
# -DFILES=<a;b;c> -P embed_files.cmake
set(body "// Generated from ${BASE} by cmake/embed_files.cmake; do not edit.\n#include \"gateway/dashboard_files.hpp\"\n\nnamespace keel::gateway {\nnamespace {\n")
set(table "")
set(i 0)
foreach(f IN LISTS FILES)
  file(READ "${BASE}/${f}" hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR bytes "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," chars "${hex}")
  string(APPEND body "const char file_${i}[] = {${chars} 0};\n")
  string(APPEND table "  {\"/${f}\", std::string_view(file_${i}, ${bytes})},\n")
  math(EXPR i "${i} + 1")
endforeach()
string(APPEND body "} // namespace\n\nconst std::vector<embedded_file>& dashboard_files() {\n  static const std::vector<embedded_file> files = {\n${table}  };\n  return files;\n}\n\n} // namespace keel::gateway\n")
file(WRITE "${OUT}.tmp" "${body}")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUT}.tmp" "${OUT}")
