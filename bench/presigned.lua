-- wrk script: walk a file of pre-signed requests, each sent at most once, and count the answers.
--
--   wrk -t T -c C -d 15s -s bench/presigned.lua http://127.0.0.1:PORT -- FILE T WRAP
--
-- FILE holds one request a line: `target<TAB>body` (target = /saasproduce?signature=…&timestamp=…
-- &nonce=…; body = compact JSON). Thread k (0-based) of T sends lines k, k+T, k+2T, … so no line is
-- sent twice across threads. WRAP=1 starts over at the end (only for the bare route, which checks no
-- nonce); WRAP=0 never replays: once a thread's share is used up it sends GET /healthz and counts it
-- as `exhausted` (the run is then discarded and repeated with more requests).
-- done() prints one line `BENCHJSON {…}`: requests, duration, errors, latency percentiles (µs) and
-- the resultCodes seen (summed over the threads by the response() hook).

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local CODES = { "000000", "000001", "000002", "000003", "000004", "000005" }

function init(args)
   local file, nthreads = args[1], tonumber(args[2])
   wrap = args[3] == "1"
   reqs = {}
   local headers = { ["Content-Type"] = "application/json;charset=utf8", ["Accept"] = "application/json" }
   local n = 0
   for line in io.lines(file) do
      if n % nthreads == id then
         local tab = line:find("\t", 1, true)
         reqs[#reqs + 1] = wrk.format("POST", line:sub(1, tab - 1), headers, line:sub(tab + 1))
      end
      n = n + 1
   end
   nreqs = #reqs
   pos = 1
   exhausted = 0
   fallback = wrk.format("GET", "/healthz")
   for _, c in ipairs(CODES) do _G["c" .. c] = 0 end
   cnone, http_other = 0, 0
end

function request()
   if pos > nreqs then
      if wrap and nreqs > 0 then
         pos = 1
      else
         exhausted = exhausted + 1
         return fallback
      end
   end
   local r = reqs[pos]
   pos = pos + 1
   return r
end

function response(status, headers, body)
   if status ~= 200 then http_other = http_other + 1 end
   local _, e = body:find('"resultCode":"', 1, true)
   if e == nil then
      cnone = cnone + 1
      return
   end
   local name = "c" .. body:sub(e + 1, e + 6)
   _G[name] = (_G[name] or 0) + 1
end

function done(summary, latency, requests)
   local codes, sent, exh, none, http = {}, 0, 0, 0, 0
   for _, c in ipairs(CODES) do codes[c] = 0 end
   for _, t in ipairs(threads) do
      for _, c in ipairs(CODES) do codes[c] = codes[c] + (t:get("c" .. c) or 0) end
      sent = sent + (t:get("pos") or 1) - 1
      exh = exh + (t:get("exhausted") or 0)
      none = none + (t:get("cnone") or 0)
      http = http + (t:get("http_other") or 0)
   end
   local parts = {}
   for _, c in ipairs(CODES) do parts[#parts + 1] = string.format('"%s":%d', c, codes[c]) end
   local e = summary.errors
   io.write(string.format(
      'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},' ..
      '"codes":{%s},"no_code":%d,"http_not_200":%d,"sent_from_file":%d,"exhausted":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      table.concat(parts, ","), none, http, sent, exh))
end
