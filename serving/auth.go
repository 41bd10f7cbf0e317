package serving

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/limiter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// The admin endpoints change what the learner believes (POST /v1/labels)
// or reveal a key's features, risk and recent decisions
// (GET /v1/keys/{key}/explain). They need a bearer token; the decision
// plane (/v1/decide, /v1/decide/batch, /v1/check, /v1/outcomes) and
// /healthz, /readyz, /metrics do not: those are for gateways and
// scrapers, kept apart by the network.

// Results of an admin call, as counted in flowguard_admin_requests_total.
const (
	adminOK           = "ok"
	adminMissingToken = "missing_token"
	adminInvalidToken = "invalid_token"
	adminNoToken      = "no_token_configured"
	adminRateLimited  = "rate_limited"
	adminTooLarge     = "too_large"
)

// adminGuard authenticates and caps calls to the admin endpoints. It is
// safe for concurrent use.
type adminGuard struct {
	mode     string
	tokenEnv string
	hasToken bool
	digest   [sha256.Size]byte // of the token: comparing digests hides its length
	limit    limiter.Limit
	buckets  *limiter.MemoryStore // one GCRA bucket per client address
	maxBody  int
	log      *slog.Logger
	calls    *prometheus.CounterVec
}

// newAdminGuard builds the guard from the server settings and the token
// (opts.AdminToken, or the environment). A token that is set but too short,
// or that holds characters a bearer token cannot carry, is an error: the
// operator meant to protect the endpoints and did not.
func newAdminGuard(cfg config.Server, token string, log *slog.Logger, reg prometheus.Registerer) (*adminGuard, error) {
	g := &adminGuard{
		mode:     cfg.AdminAuth,
		tokenEnv: cfg.AdminTokenEnv,
		limit:    limiter.Limit{Rate: cfg.AdminRate, Burst: cfg.AdminBurst, Period: time.Second},
		maxBody:  cfg.AdminMaxBodyBytes,
		log:      log,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowguard_admin_requests_total",
			Help: "Calls to the admin endpoints (labels, explain), by endpoint and result (ok, missing_token, invalid_token, no_token_configured, rate_limited, too_large).",
		}, []string{"endpoint", "result"}),
	}
	if err := g.limit.Validate(); err != nil {
		return nil, fmt.Errorf("server.admin_rate/admin_burst: %w", err)
	}
	if token != "" {
		// The messages name the variable, never the value.
		if len(token) < config.MinAdminTokenBytes {
			return nil, fmt.Errorf("the admin token in $%s is %d bytes; use at least %d (e.g. openssl rand -hex 32)",
				cfg.AdminTokenEnv, len(token), config.MinAdminTokenBytes)
		}
		if !isBearerToken(token) {
			return nil, fmt.Errorf("the admin token in $%s has a character a bearer token cannot carry (a space or newline?); use letters, digits and -._~+/=",
				cfg.AdminTokenEnv)
		}
		g.hasToken = true
		g.digest = sha256.Sum256([]byte(token))
	}
	for _, ep := range []string{"labels", "explain", "quotas"} {
		for _, r := range []string{adminOK, adminMissingToken, adminInvalidToken, adminNoToken, adminRateLimited, adminTooLarge} {
			g.calls.WithLabelValues(ep, r)
		}
	}
	if err := reg.Register(g.calls); err != nil {
		return nil, err
	}
	g.buckets = limiter.NewMemoryStore(limiter.MemoryOptions{})
	switch {
	case g.hasToken:
		log.Info("admin endpoints need a bearer token", "token_env", cfg.AdminTokenEnv)
	case g.mode == config.AdminAuthLoopback:
		log.Warn("no admin token: admin endpoints (labels, explain) answer loopback callers only, so a proxy or sidecar on this host would let everyone it forwards in; set $"+cfg.AdminTokenEnv+" (or server.admin_auth: token) before putting anything in front of this instance",
			"token_env", cfg.AdminTokenEnv)
	default:
		log.Warn("no admin token: admin endpoints (labels, explain) answer 401 to every call; set $"+cfg.AdminTokenEnv,
			"token_env", cfg.AdminTokenEnv)
	}
	return g, nil
}

// close stops the buckets' eviction loop.
func (g *adminGuard) close() { g.buckets.Close() }

// admit runs before an admin handler: the rate cap first (so guessing
// tokens is capped too), then authentication, then the body cap. It
// reports whether the handler may run; when it may not, the response is
// written.
func (s *Server) admitAdmin(ctx *fasthttp.RequestCtx, endpoint string) bool {
	g := s.admin
	peer := ctx.RemoteIP()
	res, err := g.buckets.Allow(context.Background(), limiter.Key{Name: peer.String(), Scope: "admin"}, g.limit, 1)
	if err == nil && !res.OK() {
		g.calls.WithLabelValues(endpoint, adminRateLimited).Inc()
		secs := int64((res.RetryAfter + time.Second - 1) / time.Second)
		ctx.Response.Header.Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
		s.writeError(ctx, &apiError{status: fasthttp.StatusTooManyRequests, code: "admin_rate_limited",
			message: "too many admin calls from " + peer.String() + ": at most " + strconv.FormatInt(g.limit.Rate, 10) + " a second"})
		return false
	}
	if result, e := g.authenticate(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), peer.IsLoopback()); e != nil {
		g.calls.WithLabelValues(endpoint, result).Inc()
		// Never the header: a wrong token may be a right one for elsewhere.
		s.log.Debug("admin call refused", "endpoint", endpoint, "peer", peer.String(), "result", result)
		challenge := `Bearer realm="flowguard"`
		if result == adminInvalidToken {
			challenge += `, error="invalid_token"`
		}
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, challenge)
		s.writeError(ctx, e)
		return false
	}
	if len(ctx.PostBody()) > g.maxBody {
		g.calls.WithLabelValues(endpoint, adminTooLarge).Inc()
		s.writeError(ctx, bodyTooLarge(g.maxBody))
		return false
	}
	g.calls.WithLabelValues(endpoint, adminOK).Inc()
	return true
}

// authenticate checks an Authorization header value. It returns the
// result's metric label and, when the call is refused, the 401 to send.
func (g *adminGuard) authenticate(header []byte, loopback bool) (string, *apiError) {
	if !g.hasToken {
		if g.mode == config.AdminAuthLoopback && loopback {
			return adminOK, nil
		}
		msg := "this server has no admin token ($" + g.tokenEnv + " is unset), so admin endpoints refuse every call"
		if g.mode == config.AdminAuthLoopback {
			msg = "this server has no admin token ($" + g.tokenEnv + " is unset), so admin endpoints answer loopback callers only"
		}
		return adminNoToken, &apiError{status: fasthttp.StatusUnauthorized, code: "unauthorized", message: msg}
	}
	presented, ok := bearerToken(header)
	if !ok {
		return adminMissingToken, &apiError{status: fasthttp.StatusUnauthorized, code: "unauthorized",
			message: "admin endpoints need an Authorization: Bearer TOKEN header"}
	}
	d := sha256.Sum256(presented)
	if subtle.ConstantTimeCompare(d[:], g.digest[:]) != 1 {
		return adminInvalidToken, &apiError{status: fasthttp.StatusUnauthorized, code: "unauthorized",
			message: "the bearer token is not the admin token"}
	}
	return adminOK, nil
}

// bearerToken returns the token of an "Authorization: Bearer TOKEN" value;
// the scheme is case-insensitive (RFC 7235).
func bearerToken(h []byte) ([]byte, bool) {
	const scheme = "bearer "
	if len(h) <= len(scheme) {
		return nil, false
	}
	for i := range len(scheme) {
		c := h[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != scheme[i] {
			return nil, false
		}
	}
	tok := h[len(scheme):]
	for len(tok) > 0 && tok[0] == ' ' {
		tok = tok[1:]
	}
	return tok, len(tok) > 0
}

// isBearerToken reports whether t fits RFC 6750's b64token.
func isBearerToken(t string) bool {
	for i := range len(t) {
		c := t[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/', c == '=':
		default:
			return false
		}
	}
	return true
}
