-- wrk script: POST /v1/decide for a key drawn at random from FG_KEYS keys of
-- one tenant, per request (each wrk thread seeds its own generator).
local keys = tonumber(os.getenv("FG_KEYS") or "10000")
local tenant = os.getenv("FG_TENANT") or "bench"
setup = function(thread)
  thread:set("seed", math.random(1, 2^30))
end
init = function()
  math.randomseed(seed or os.time())
end
request = function()
  local body = string.format('{"key":"k_live_%d","tenant":"%s","endpoint":"GET /v1/balance","cost":1,"region":"local","client_ip":"203.0.113.7"}', math.random(0, keys - 1), tenant)
  return wrk.format("POST", "/v1/decide", {["Content-Type"] = "application/json"}, body)
end
