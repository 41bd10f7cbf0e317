package serving

import (
	"net"
	"os"
	"slices"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/devflow/flowguard/internal/config"
)

// No Envoy runs here: TestEnvoyExample reads examples/gateways/envoy.yaml
// and the Istio EnvoyFilter as YAML and checks what flowguard depends on.
// The ratelimit filter asks domain flowguard through the flowguard
// cluster, fails open within a timeout, every descriptor its rate_limits
// make has an API key and only entry keys the default
// server.grpc.descriptors read, and the cluster's port is the gRPC port of
// examples/grpc.yaml.
func TestEnvoyExample(t *testing.T) {
	cfg, err := config.Load("../examples/grpc.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, grpcPort, err := net.SplitHostPort(cfg.Server.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	mapped := map[string]bool{}
	for _, f := range cfg.Server.GRPC.Descriptors.Fields() {
		for _, k := range f.Keys {
			mapped[k] = true
		}
	}
	if !slices.Equal(cfg.Server.GRPC.Descriptors.Key, []string{"api_key"}) {
		t.Fatalf("examples/grpc.yaml maps the key to %v: the example should show the defaults", cfg.Server.GRPC.Descriptors.Key)
	}

	for _, c := range []struct{ file, cluster string }{
		{"envoy.yaml", "flowguard"},
		{"istio-envoyfilter.yaml", "outbound|" + grpcPort + "||flowguard.flowguard.svc.cluster.local"},
	} {
		t.Run(c.file, func(t *testing.T) {
			doc := readYAML(t, "../examples/gateways/"+c.file)
			filters := find(doc, func(m map[string]any) bool { return m["name"] == "envoy.filters.http.ratelimit" })
			if len(filters) != 1 {
				t.Fatalf("%d envoy.filters.http.ratelimit filters, want 1", len(filters))
			}
			rl := filters[0]["typed_config"].(map[string]any)
			if rl["domain"] != cfg.Server.GRPC.Domain || rl["failure_mode_deny"] != false || rl["timeout"] == nil {
				t.Errorf("ratelimit filter %v: want domain %q, failure_mode_deny: false and a timeout", rl, cfg.Server.GRPC.Domain)
			}
			svc := rl["rate_limit_service"].(map[string]any)
			grpcSvc := svc["grpc_service"].(map[string]any)
			if svc["transport_api_version"] != "V3" || grpcSvc["envoy_grpc"].(map[string]any)["cluster_name"] != c.cluster {
				t.Errorf("rate_limit_service %v: want V3 through cluster %q", svc, c.cluster)
			}
			descriptors := 0
			for _, r := range find(doc, func(m map[string]any) bool { return m["rate_limits"] != nil }) {
				for _, limit := range r["rate_limits"].([]any) {
					keys := descriptorKeys(t, limit.(map[string]any)["actions"].([]any))
					descriptors++
					if !slices.Contains(keys, "api_key") {
						t.Errorf("a descriptor without api_key: %v", keys)
					}
					for _, k := range keys {
						if !mapped[k] {
							t.Errorf("descriptor entry %q is not one the default mapping reads (%v)", k, cfg.Server.GRPC.Descriptors)
						}
					}
				}
			}
			if descriptors == 0 {
				t.Fatal("no rate_limits")
			}
			if c.file != "envoy.yaml" {
				return
			}
			clusters := find(doc, func(m map[string]any) bool { return m["name"] == "flowguard" && m["load_assignment"] != nil })
			if len(clusters) != 1 {
				t.Fatalf("%d flowguard clusters, want 1", len(clusters))
			}
			ports := find(clusters[0], func(m map[string]any) bool { return m["port_value"] != nil })
			if len(ports) != 1 || strconv.Itoa(ports[0]["port_value"].(int)) != grpcPort {
				t.Errorf("flowguard cluster ports %v, want %s (server.grpc_addr of examples/grpc.yaml)", ports, grpcPort)
			}
			if len(find(clusters[0], func(m map[string]any) bool { return m["http2_protocol_options"] != nil })) != 1 {
				t.Error("the flowguard cluster does not speak HTTP/2: gRPC needs it")
			}
		})
	}
}

// descriptorKeys are the entry keys Envoy makes from a rate_limits
// entry's actions.
func descriptorKeys(t *testing.T, actions []any) []string {
	t.Helper()
	var keys []string
	for _, a := range actions {
		for kind, v := range a.(map[string]any) {
			spec, _ := v.(map[string]any)
			switch kind {
			case "request_headers":
				keys = append(keys, spec["descriptor_key"].(string))
			case "header_match", "generic_key":
				key := kind
				if k, ok := spec["descriptor_key"].(string); ok {
					key = k
				}
				keys = append(keys, key)
			case "remote_address":
				keys = append(keys, "remote_address")
			default:
				t.Errorf("action %s: this test does not know its entry key", kind)
			}
		}
	}
	return keys
}

func readYAML(t *testing.T, path string) any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// find returns every mapping under v that match accepts.
func find(v any, match func(map[string]any) bool) []map[string]any {
	var out []map[string]any
	switch v := v.(type) {
	case map[string]any:
		if match(v) {
			out = append(out, v)
		}
		for _, e := range v {
			out = append(out, find(e, match)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, find(e, match)...)
		}
	}
	return out
}
