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
	q, w := quotaWindow(d.Budget.Rate, d.Budget.Period)
	reset := (d.ResetMS + 999) / 1000

	b := appendSFString(buf[:0], d.Rule.Name)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, q, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, w, 10)
	h.SetBytesV("RateLimit-Policy", b)

	b = appendSFString(buf[:0], d.Rule.Name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	h.SetBytesV("RateLimit", b)

	h.SetBytesV("RateLimit-Limit", strconv.AppendInt(buf[:0], q, 10))
	h.SetBytesV("RateLimit-Remaining", strconv.AppendInt(buf[:0], d.Remaining, 10))
	h.SetBytesV("RateLimit-Reset", strconv.AppendInt(buf[:0], reset, 10))
	if d.Action == pipeline.ActionThrottle {
		retry := (d.RetryAfterMS + 999) / 1000
		if d.RetryAfterMS < 0 { // never passes at this cost: point at the window
			retry = w
		}
		h.SetBytesV("Retry-After", strconv.AppendInt(buf[:0], max(retry, 1), 10))
	}
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
