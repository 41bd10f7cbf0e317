package serving

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/devflow/flowguard/pipeline"
)

// setRateLimitHeaders sets the IETF httpapi draft-11 fields and their
// legacy forms:
//
//	RateLimit-Policy: "free";q=60;w=60
//	RateLimit: "free";r=19;t=1
//	RateLimit-Limit: 60, RateLimit-Remaining: 19, RateLimit-Reset: 1
//	Retry-After: 1 (on a throttle)
//
// The window w is whole seconds, as the draft requires; a policy whose
// period is not a whole number of seconds is restated over the nearest
// whole-second window with its quota scaled to match.
func setRateLimitHeaders(h *fasthttp.ResponseHeader, d *Decision) {
	var buf [160]byte
	q, _ := quotaWindow(d.Budget.Rate, d.Budget.Period)
	h.SetBytesV("RateLimit-Policy", appendRateLimitPolicy(buf[:0], d))
	h.SetBytesV("RateLimit", appendRateLimit(buf[:0], d))
	h.SetBytesV("RateLimit-Limit", strconv.AppendInt(buf[:0], q, 10))
	h.SetBytesV("RateLimit-Remaining", strconv.AppendInt(buf[:0], d.Remaining, 10))
	h.SetBytesV("RateLimit-Reset", strconv.AppendInt(buf[:0], resetSeconds(d), 10))
	if retry, ok := retryAfter(d); ok {
		h.SetBytesV("Retry-After", strconv.AppendInt(buf[:0], retry, 10))
	}
}

// appendRateLimitPolicy appends the RateLimit-Policy value: "free";q=60;w=60.
// The gRPC API sends the same value (grpc.go).
func appendRateLimitPolicy(b []byte, d *Decision) []byte {
	q, w := quotaWindow(d.Budget.Rate, d.Budget.Period)
	b = appendSFString(b, d.Rule.Name)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, q, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, w, 10)
	if d.Daily > 0 {
		// The daily window: "free-day";q=5000;w=86400.
		b = append(b, ", "...)
		b = appendDailyName(b, d.Rule.Name)
		b = append(b, ";q="...)
		b = strconv.AppendInt(b, d.Daily, 10)
		b = append(b, ";w=86400"...)
	}
	return b
}

// appendDailyName appends the quoted name of a rule's daily window,
// "free-day", without building the string.
func appendDailyName(b []byte, name string) []byte {
	b = appendSFString(b, name)
	return append(b[:len(b)-1], `-day"`...)
}

// appendRateLimit appends the RateLimit value: "free";r=19;t=1, or the
// daily window's when it is what throttled: "free-day";r=0;t=3600.
func appendRateLimit(b []byte, d *Decision) []byte {
	if d.Reason == pipeline.ReasonDailyQuota {
		b = appendDailyName(b, d.Rule.Name)
	} else {
		b = appendSFString(b, d.Rule.Name)
	}
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	return strconv.AppendInt(b, resetSeconds(d), 10)
}

// resetSeconds is the decision's reset, rounded up to whole seconds.
func resetSeconds(d *Decision) int64 { return (d.ResetMS + 999) / 1000 }

// retryAfter is the Retry-After value of a throttle, in whole seconds; ok
// is false for a decision that is not a throttle (a block has no time
// after which a retry passes).
func retryAfter(d *Decision) (seconds int64, ok bool) {
	if d.Action != pipeline.ActionThrottle {
		return 0, false
	}
	retry := (d.RetryAfterMS + 999) / 1000
	if d.RetryAfterMS < 0 { // never passes at this cost: point at the window
		_, retry = quotaWindow(d.Budget.Rate, d.Budget.Period)
	}
	return max(retry, 1), true
}

// quotaWindow restates rate per period as a quota over whole seconds.
func quotaWindow(rate int64, period time.Duration) (q, w int64) {
	w = int64((period + time.Second/2) / time.Second)
	if w < 1 {
		w = 1
	}
	if period == time.Duration(w)*time.Second {
		return rate, w
	}
	return max(1, int64(float64(rate)*float64(w)*float64(time.Second)/float64(period))), w
}

// appendSFString appends s as a structured-field string (RFC 8941):
// quoted, with \ and " escaped, and anything outside printable ASCII
// replaced by '?' since sf-strings cannot carry it.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
