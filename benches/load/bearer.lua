-- One bearer token on every request (authgate verifies it once, then hits its cache).
local f = assert(io.open(os.getenv("TOKEN_FILE"), "r"))
local token = f:read("*l")
f:close()
wrk.headers["Authorization"] = "Bearer " .. token
