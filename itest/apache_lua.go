package itest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// luaHandlers are the /lua/ documents of a test Apache with
// ApacheConfig.Lua. mod_lua runs a handler in the thread that serves the
// request (a worker thread under the worker and event MPMs), where a CGI
// would run in a process of its own: they show what happens to the serving
// thread. @GATES@ and @STARTED@ are replaced by the scratch directory's
// gates/ and started/.
const luaHandlers = `local gates, started = "@GATES@", "@STARTED@"

local function slurp(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function report(r, start)
  r.content_type = "text/plain"
  -- /proc/self is the process, /proc/thread-self this thread.
  r:puts("pid ", slurp("/proc/self/stat"):match("^(%d+)"), "\n")
  r:puts("tid ", slurp("/proc/thread-self/stat"):match("^(%d+)"), "\n")
  for line in start:gmatch("[^\n]+") do r:puts("start ", line, "\n") end
  for line in slurp("/proc/thread-self/cgroup"):gmatch("[^\n]+") do r:puts("end ", line, "\n") end
  return apache2.OK
end

function whoami(r)
  return report(r, slurp("/proc/thread-self/cgroup"))
end

function burn(r)
  local start = slurp("/proc/thread-self/cgroup")
  local gate = r.args or ""
  if not gate:match("^[%w-]+$") then
    r.status = 400
    r.content_type = "text/plain"
    r:puts("burn: name a gate: /lua/burn?G, G letters, digits and -\n")
    return apache2.OK
  end
  local mark = io.open(started .. "/" .. gate .. "." .. slurp("/proc/thread-self/stat"):match("^(%d+)"), "w")
  if mark then mark:close() end
  local x, deadline = 0, os.time() + 600
  while not exists(gates .. "/" .. gate) and os.time() < deadline do
    for i = 1, 100000 do x = (x * 31 + i) % 1000003 end
  end
  return report(r, start)
end
`

// luaConfig writes the Lua handlers into dir and returns the configuration
// that serves them:
//
//	/lua/whoami   answers at once (ParseThreadReport reads it)
//	/lua/burn?G   leaves a mark that LuaStarted counts, then keeps the
//	              serving thread busy on a CPU until the test opens the
//	              gate G (OpenGate), then answers like /lua/whoami; it
//	              gives up after 10 minutes
func luaConfig(dir string) (string, error) {
	started := filepath.Join(dir, "started")
	// The handlers run as www-data and leave their marks there.
	if err := os.MkdirAll(started, 0o777); err != nil {
		return "", err
	}
	if err := os.Chmod(started, 0o777); err != nil { // past the umask
		return "", err
	}
	script := filepath.Join(dir, "lua", "threads.lua")
	if err := os.MkdirAll(filepath.Dir(script), 0o755); err != nil {
		return "", err
	}
	r := strings.NewReplacer("@GATES@", filepath.Join(dir, "gates"), "@STARTED@", started)
	if err := os.WriteFile(script, []byte(r.Replace(luaHandlers)), 0o644); err != nil {
		return "", fmt.Errorf("writing the Lua handlers: %w", err)
	}
	return fmt.Sprintf(`LoadModule lua_module /usr/lib/apache2/modules/mod_lua.so
LuaMapHandler ^/lua/whoami$ %[1]s whoami
LuaMapHandler ^/lua/burn$ %[1]s burn
`, script), nil
}

// LuaStarted lists the threads (by id) whose /lua/burn at gate g has begun.
func (a *Apache) LuaStarted(g string) ([]int, error) {
	return startedMarks(filepath.Join(a.Dir, "started"), g)
}
