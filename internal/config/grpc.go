package config

import (
	"strings"

	"github.com/devflow/flowguard/internal/yamlx"
)

// GRPC configures the Envoy rate-limit gRPC API
// (envoy.service.ratelimit.v3.RateLimitService), served on
// Server.GRPCAddr.
type GRPC struct {
	// Domain is the only rate-limit domain served; a request for another
	// is an InvalidArgument. Default: "flowguard".
	Domain string `yaml:"domain"`
	// MaxDescriptors caps the descriptors of one request. Default: 64.
	MaxDescriptors int `yaml:"max_descriptors"`
	// MaxEntries caps the entries of one descriptor. Default: 16.
	MaxEntries int `yaml:"max_entries"`
	// MaxMessageBytes caps a request message; larger is refused by gRPC
	// with ResourceExhausted. Default: 65536.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// Descriptors says which descriptor entries carry which request field.
	Descriptors GRPCDescriptors `yaml:"descriptors"`
}

// GRPCDescriptors maps descriptor entry keys to the fields of a decision
// request. Each field lists the entry keys that carry it; within one
// descriptor the first listed key present wins. An empty list turns the
// field off (but Key, which every descriptor needs).
type GRPCDescriptors struct {
	// Key is the API key. Default: [api_key].
	Key []string `yaml:"key"`
	// Tenant is the tenant. Default: [tenant].
	Tenant []string `yaml:"tenant"`
	// Method and Path make the endpoint "METHOD /path" when no Endpoint
	// entry is present; ":method" and ":path" are what Envoy's
	// request_headers action names the pseudo-headers when its
	// descriptor_key repeats the header name. Defaults: [method, :method]
	// and [path, :path].
	Method []string `yaml:"method"`
	Path   []string `yaml:"path"`
	// Endpoint is the whole "METHOD /path"; header_match is the key of
	// Envoy's header_match action, whose descriptor_value is the entry's
	// value. Default: [endpoint, header_match].
	Endpoint []string `yaml:"endpoint"`
	// ClientIP is the client address; remote_address is the key of Envoy's
	// remote_address action. Default: [remote_address].
	ClientIP []string `yaml:"client_ip"`
}

func (g *GRPC) defaults() {
	if g.Domain == "" {
		g.Domain = "flowguard"
	}
	if g.MaxDescriptors == 0 {
		g.MaxDescriptors = 64
	}
	if g.MaxEntries == 0 {
		g.MaxEntries = 16
	}
	if g.MaxMessageBytes == 0 {
		g.MaxMessageBytes = 64 << 10
	}
	d := &g.Descriptors
	for _, f := range []struct {
		list *[]string
		def  []string
	}{
		{&d.Key, []string{"api_key"}},
		{&d.Tenant, []string{"tenant"}},
		{&d.Method, []string{"method", ":method"}},
		{&d.Path, []string{"path", ":path"}},
		{&d.Endpoint, []string{"endpoint", "header_match"}},
		{&d.ClientIP, []string{"remote_address"}},
	} {
		if *f.list == nil {
			*f.list = f.def
		}
	}
}

// GRPCField is one request field of the descriptor mapping and the entry
// keys that carry it.
type GRPCField struct {
	Name string // as in the file: key, tenant, method, path, endpoint, client_ip
	Keys []string
}

// Fields returns the mapping in a fixed order: key, tenant, method, path,
// endpoint, client_ip.
func (d *GRPCDescriptors) Fields() []GRPCField {
	return []GRPCField{{"key", d.Key}, {"tenant", d.Tenant}, {"method", d.Method}, {"path", d.Path},
		{"endpoint", d.Endpoint}, {"client_ip", d.ClientIP}}
}

func (g *GRPC) validate(d *yamlx.Doc) yamlx.Errors {
	var errs yamlx.Errors
	bad := func(path []string, format string, args ...any) {
		errs = append(errs, d.Errorf(append([]string{"server", "grpc"}, path...), format, args...))
	}
	if strings.TrimSpace(g.Domain) != g.Domain || len(g.Domain) > 256 {
		bad([]string{"domain"}, "%q must have no surrounding spaces and at most 256 bytes", g.Domain)
	}
	if g.MaxDescriptors < 1 || g.MaxDescriptors > 1024 {
		bad([]string{"max_descriptors"}, "%d must be between 1 and 1024", g.MaxDescriptors)
	}
	if g.MaxEntries < 1 || g.MaxEntries > 256 {
		bad([]string{"max_entries"}, "%d must be between 1 and 256", g.MaxEntries)
	}
	if g.MaxMessageBytes < 1024 || g.MaxMessageBytes > 64<<20 {
		bad([]string{"max_message_bytes"}, "%d must be between 1024 and 67108864", g.MaxMessageBytes)
	}
	if len(g.Descriptors.Key) == 0 {
		bad([]string{"descriptors", "key"}, "at least one entry key must carry the API key")
	}
	owner := map[string]string{}
	for _, f := range g.Descriptors.Fields() {
		for _, k := range f.Keys {
			switch prev, dup := owner[k]; {
			case k == "" || len(k) > 256:
				bad([]string{"descriptors", f.Name}, "entry keys must be 1 to 256 bytes, got %q", k)
			case dup && prev == f.Name:
				bad([]string{"descriptors", f.Name}, "entry key %q is listed twice", k)
			case dup:
				bad([]string{"descriptors", f.Name}, "entry key %q already carries %s", k, prev)
			default:
				owner[k] = f.Name
			}
		}
	}
	return errs
}
