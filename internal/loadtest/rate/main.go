// Command rate is the constant-rate load generator `make bench` uses for
// latency at a fixed rate. It is open-loop: requests are due at fixed
// intervals whatever the server does, and each latency is measured from
// when its request was due, not when a connection got free, so a stalled
// server shows as latency instead of hiding as a lower rate (no
// coordinated omission).
//
// It exists because vegeta, the usual Go tool, tops out near 8K requests/s
// on a 2-core machine with p99 in the tens of milliseconds from its own
// scheduling, while the servers measured here need 20K+ at half their
// maximum. It sends through fasthttp's client, which costs a few
// microseconds a request.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

type report struct {
	Rate     int     `json:"rate"`
	Sent     int     `json:"sent"`
	OK       int     `json:"ok"`
	Errors   int     `json:"errors"`
	Non2xx   int     `json:"non_2xx"`
	Achieved float64 `json:"achieved_per_s"`
	P50us    float64 `json:"p50_us"`
	P90us    float64 `json:"p90_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p999_us"`
	MaxUs    float64 `json:"max_us"`
	// Service latencies are from the moment the request went out, without
	// the time it waited for its due time to be noticed or for a free
	// connection: what the server and the network took.
	ServiceP50us float64 `json:"service_p50_us"`
	ServiceP99us float64 `json:"service_p99_us"`
}

func main() {
	target := flag.String("url", "http://127.0.0.1:8080/v1/decide", "decide URL")
	rate := flag.Int("rate", 1000, "requests per second")
	dur := flag.Duration("duration", 10*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "connections (and worker goroutines)")
	keys := flag.Int("keys", 1000, "distinct API keys")
	tenant := flag.String("tenant", "bench", "tenant of every request")
	flag.Parse()
	if *rate < 1 || *conns < 1 || *keys < 1 || *dur <= 0 {
		fmt.Fprintln(os.Stderr, "rate: -rate, -conns, -keys and -duration must be positive")
		os.Exit(2)
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		fmt.Fprintf(os.Stderr, "rate: bad -url %q\n", *target)
		os.Exit(2)
	}
	bodies := make([][]byte, *keys)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"key":"k_live_%d","tenant":%q,"endpoint":"GET /v1/balance","cost":1,"region":"local","client_ip":"203.0.113.7"}`, i, *tenant)
	}
	hc := &fasthttp.HostClient{Addr: u.Host, MaxConns: *conns, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}

	total := int(float64(*rate) * dur.Seconds())
	interval := time.Second / time.Duration(*rate)
	due := make(chan time.Time, total)
	lat := make([]time.Duration, total)
	svc := make([]time.Duration, total)
	var next, errs, non2xx atomic.Int64
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.SetRequestURI(*target)
			req.Header.SetMethod("POST")
			req.Header.SetContentType("application/json")
			for t0 := range due {
				i := next.Add(1) - 1
				req.SetBodyRaw(bodies[int(i)%len(bodies)])
				sent := time.Now()
				err := hc.Do(req, resp)
				done := time.Now()
				lat[i], svc[i] = done.Sub(t0), done.Sub(sent)
				switch {
				case err != nil:
					errs.Add(1)
				case resp.StatusCode() < 200 || resp.StatusCode() > 299:
					non2xx.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	for i := 0; i < total; {
		now := time.Now()
		for ; i < total && !start.Add(time.Duration(i)*interval).After(now); i++ {
			due <- start.Add(time.Duration(i) * interval)
		}
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)

	slices.Sort(lat)
	slices.Sort(svc)
	at := func(xs []time.Duration, p float64) float64 {
		return float64(xs[min(len(xs)-1, int(p*float64(len(xs))))].Microseconds())
	}
	q := func(p float64) float64 { return at(lat, p) }
	r := report{Rate: *rate, Sent: total, Errors: int(errs.Load()), Non2xx: int(non2xx.Load()),
		Achieved: float64(total) / elapsed.Seconds(), P50us: q(0.50), P90us: q(0.90), P99us: q(0.99), P999us: q(0.999), MaxUs: float64(lat[len(lat)-1].Microseconds())}
	r.ServiceP50us, r.ServiceP99us = at(svc, 0.5), at(svc, 0.99)
	r.OK = r.Sent - r.Errors - r.Non2xx
	json.NewEncoder(os.Stdout).Encode(r)
}
