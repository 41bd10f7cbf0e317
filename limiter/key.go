package limiter

import "hash/maphash"

// Key names one budget: an API key and the scope of the policy rule that
// governs it (an endpoint pattern, or "" for the key's whole traffic). All
// scopes of one API key share a Redis hash tag, so they live on one Cluster
// slot.
type Key struct {
	Name  string
	Scope string
}

func (k Key) hash(seed maphash.Seed) uint64 {
	h := maphash.String(seed, k.Name)
	if k.Scope != "" {
		h ^= maphash.String(seed, k.Scope)*0x9e3779b97f4a7c15 + 1
	}
	return h
}

// redisKey is prefix{name}:scope. The braces are the hash tag.
func (k Key) redisKey(prefix string) string {
	return prefix + "{" + k.Name + "}:" + k.Scope
}
