-- Cycles through many distinct pre-minted tokens, one a line of $TOKEN_FILE. The requests are
-- formatted once, on the first call (after wrk has set Host and the path), so that wrk's own
-- cost per request stays a table lookup.
local reqs, n, i = nil, 0, 0
request = function()
  if reqs == nil then
    reqs = {}
    for line in io.lines(os.getenv("TOKEN_FILE")) do
      if #line > 0 then
        n = n + 1
        reqs[n] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
      end
    end
    assert(n > 0, "no tokens in " .. os.getenv("TOKEN_FILE"))
  end
  i = i % n + 1
  return reqs[i]
end
