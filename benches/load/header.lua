-- One extra header on every request, from the first line of $TOKEN_FILE ("Name: value"):
-- the session mode's `Cookie: authgate=<id>`, the apikey mode's `x-api-key: <key>`.
local f = assert(io.open(os.getenv("TOKEN_FILE"), "r"))
local line = f:read("*l")
f:close()
local name, value = line:match("^([^:]+):%s*(.-)%s*$")
assert(name, "no \"Name: value\" line in " .. os.getenv("TOKEN_FILE"))
wrk.headers[name] = value
