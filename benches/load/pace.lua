-- Appended by run.sh for the paced latency pass: each connection waits PACE_MS after every
-- response, so the load stays below saturation and the percentiles measure latency, not queueing.
local pace = tonumber(os.getenv("PACE_MS") or "0")
delay = function() return pace end
