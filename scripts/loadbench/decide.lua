-- wrk script: POST /v1/decide for FG_KEYS distinct keys of one tenant.
local keys = tonumber(os.getenv("FG_KEYS") or "1000")
local tenant = os.getenv("FG_TENANT") or "bench"
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"key":"k_live_%d","tenant":"%s","endpoint":"GET /v1/balance","cost":1,"region":"local","client_ip":"203.0.113.7"}', n % keys, tenant)
  return wrk.format("POST", "/v1/decide", {["Content-Type"] = "application/json"}, body)
end
