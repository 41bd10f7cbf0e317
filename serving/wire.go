package serving

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/devflow/flowguard/features"
)

// Limits on request fields; longer values are rejected, not truncated.
const (
	maxKeyLen      = 256
	maxFieldLen    = 512
	maxBatchNested = 64
)

// apiError is a 4xx answer: {"error":{"code":…,"message":…}}.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func badRequest(code, message string) *apiError {
	return &apiError{status: 400, code: code, message: message}
}

// parseDecide parses one decide request object. It never panics, whatever
// the bytes.
func parseDecide(p *fastjson.Parser, body []byte, maxCost int64) (DecideRequest, *apiError) {
	if len(body) == 0 {
		return DecideRequest{}, badRequest("empty_body", "request body is empty; send a JSON object with at least \"key\"")
	}
	v, err := p.ParseBytes(body)
	if err != nil {
		return DecideRequest{}, badRequest("malformed_json", "request body is not valid JSON: "+err.Error())
	}
	return decodeDecide(v, maxCost)
}

// decodeDecide validates one parsed request object.
func decodeDecide(v *fastjson.Value, maxCost int64) (DecideRequest, *apiError) {
	var r DecideRequest
	obj, err := v.Object()
	if err != nil {
		return r, badRequest("wrong_type", "request must be a JSON object, got "+v.Type().String())
	}
	var bad *apiError
	obj.Visit(func(k []byte, f *fastjson.Value) {
		if bad != nil {
			return
		}
		switch string(k) {
		case "key":
			r.Key, bad = stringField("key", f, maxKeyLen)
		case "tenant":
			r.Tenant, bad = stringField("tenant", f, maxFieldLen)
		case "endpoint":
			r.Endpoint, bad = stringField("endpoint", f, maxFieldLen)
		case "region":
			r.Region, bad = stringField("region", f, maxFieldLen)
		case "client_ip":
			r.ClientIP, bad = stringField("client_ip", f, maxFieldLen)
		case "cost":
			r.Cost, bad = costField(f, maxCost)
		case "last_status":
			r.LastStatus, bad = statusField(f)
		}
	})
	if bad != nil {
		return DecideRequest{}, bad
	}
	if r.Key == "" {
		return DecideRequest{}, badRequest("missing_key", "\"key\" is required and must be a non-empty string")
	}
	if r.Cost == 0 {
		r.Cost = 1
	}
	return r, nil
}

func stringField(name string, v *fastjson.Value, maxLen int) (string, *apiError) {
	if v.Type() == fastjson.TypeNull {
		return "", nil
	}
	b, err := v.StringBytes()
	if err != nil {
		return "", badRequest("wrong_type", "\""+name+"\" must be a string, got "+v.Type().String())
	}
	if !fieldOK(b, maxLen) {
		return "", fieldError("\""+name+"\"", b, maxLen)
	}
	return string(b), nil
}

// fieldValue validates one text field of a request, from a JSON body or a
// header (/v1/check): at most maxLen bytes, valid UTF-8. One check, so
// every entry point refuses the same input; the error's text is built only
// for a bad field (building the quoted name on every call cost the decide
// handler 5% of its time).
func fieldValue(name string, b []byte, maxLen int) (string, *apiError) {
	if !fieldOK(b, maxLen) {
		return "", fieldError(name, b, maxLen)
	}
	return string(b), nil
}

func fieldOK(b []byte, maxLen int) bool { return len(b) <= maxLen && utf8.Valid(b) }

// fieldError is the error for a field fieldOK refused.
func fieldError(name string, b []byte, maxLen int) *apiError {
	if len(b) > maxLen {
		return badRequest("field_too_long", name+" is longer than "+strconv.Itoa(maxLen)+" bytes")
	}
	return badRequest("invalid_utf8", name+" is not valid UTF-8")
}

func statusField(v *fastjson.Value) (int, *apiError) {
	if v.Type() == fastjson.TypeNull {
		return 0, nil
	}
	n, err := v.Int()
	if v.Type() != fastjson.TypeNumber || err != nil || n < 100 || n > 599 {
		return 0, badRequest("invalid_status", "\"last_status\" must be an HTTP status code from 100 to 599, got "+string(v.MarshalTo(nil)))
	}
	return n, nil
}

func costField(v *fastjson.Value, maxCost int64) (int64, *apiError) {
	if v.Type() != fastjson.TypeNumber {
		return 0, badRequest("wrong_type", "\"cost\" must be a whole number, got "+v.Type().String())
	}
	n, err := v.Int64()
	if err != nil {
		f, ferr := v.Float64()
		switch {
		case ferr == nil && f != math.Trunc(f):
			return 0, badRequest("invalid_cost", "\"cost\" must be a whole number, got "+string(v.MarshalTo(nil)))
		case ferr == nil && f >= 1 && f <= float64(maxCost):
			return 0, badRequest("invalid_cost", "\"cost\" must be written as a whole number, without a fraction or an exponent: "+
				strconv.FormatInt(int64(f), 10)+", not "+string(v.MarshalTo(nil)))
		default:
			return 0, badRequest("invalid_cost", "\"cost\" "+string(v.MarshalTo(nil))+" is out of range 1.."+strconv.FormatInt(maxCost, 10))
		}
	}
	if n < 1 || n > maxCost {
		return 0, badRequest("invalid_cost", "\"cost\" "+strconv.FormatInt(n, 10)+" is out of range 1.."+strconv.FormatInt(maxCost, 10))
	}
	return n, nil
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendError appends {"error":{"code":…,"message":…}}.
func appendError(b []byte, e *apiError) []byte {
	b = append(b, `{"error":{"code":`...)
	b = appendJSONString(b, e.code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, e.message)
	return append(b, "}}"...)
}

// appendFloat appends a float the way encoding/json would: shortest form.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// parseOutcome validates a POST /v1/outcomes body.
func parseOutcome(p *fastjson.Parser, body []byte) (string, features.Outcome, *apiError) {
	var o features.Outcome
	if len(body) == 0 {
		return "", o, badRequest("empty_body", "request body is empty; send {\"key\":…,\"requests\":N,\"errors\":N,\"auth_failures\":N}")
	}
	v, err := p.ParseBytes(body)
	if err != nil {
		return "", o, badRequest("malformed_json", "request body is not valid JSON: "+err.Error())
	}
	obj, err := v.Object()
	if err != nil {
		return "", o, badRequest("wrong_type", "request must be a JSON object, got "+v.Type().String())
	}
	var key string
	var bad *apiError
	count := func(name string, f *fastjson.Value) int64 {
		n, err := f.Int64()
		if f.Type() != fastjson.TypeNumber || err != nil || n < 0 || n > 1e9 {
			bad = badRequest("invalid_count", "\""+name+"\" must be a whole number from 0 to 1000000000, got "+string(f.MarshalTo(nil)))
		}
		return n
	}
	obj.Visit(func(k []byte, f *fastjson.Value) {
		if bad != nil {
			return
		}
		switch string(k) {
		case "key":
			key, bad = stringField("key", f, maxKeyLen)
		case "requests":
			o.Requests = count("requests", f)
		case "errors":
			o.Errors = count("errors", f)
		case "auth_failures":
			o.AuthFailures = count("auth_failures", f)
		}
	})
	switch {
	case bad != nil:
		return "", o, bad
	case key == "":
		return "", o, badRequest("missing_key", "\"key\" is required and must be a non-empty string")
	case o.Errors > o.Requests || o.AuthFailures > o.Requests:
		return "", o, badRequest("invalid_count", "\"errors\" and \"auth_failures\" cannot exceed \"requests\"")
	}
	return key, o, nil
}
