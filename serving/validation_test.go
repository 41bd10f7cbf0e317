package serving

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// /v1/check validates its headers as /v1/decide validates its fields:
// invalid UTF-8 is refused, not collapsed to U+FFFD; and a cost written
// as 1.0 or 1e3 is told to be a whole number.
func TestCheckAndDecideValidateAlike(t *testing.T) {
	ts := startServer(t, mustParse(t, testPolicies))
	for _, key := range []string{"utf8bad\xff", "utf8bad\xfe"} {
		req, _ := http.NewRequest("GET", ts.URL+"/v1/check", nil)
		req.Header.Set("X-Api-Key", key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || errorCode(t, b) != "invalid_utf8" {
			t.Errorf("X-Api-Key %q: %d %s, want 400 invalid_utf8", key, resp.StatusCode, b)
		}
	}
	for cost, want := range map[string]string{
		"1.0":   `"cost" must be written as a whole number, without a fraction or an exponent: 1, not 1.0`,
		"1e1":   `"cost" must be written as a whole number, without a fraction or an exponent: 10, not 1e1`,
		"1.5":   `"cost" must be a whole number, got 1.5`,
		"1e300": `"cost" 1e300 is out of range 1..100`,
	} {
		resp, b := post(t, ts.URL+"/v1/decide", `{"key":"k","cost":`+cost+`}`)
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		if resp.StatusCode != 400 || e.Error.Message != want {
			t.Errorf("cost %s: %d %s, want %q", cost, resp.StatusCode, b, want)
		}
	}
}
