package cluster

import (
	"hash/fnv"
	"sort"
)

// Rank orders members (protoactor remote addresses) for key by rendezvous
// (highest random weight) hashing: the first is the key's owner, the next
// ones its replicas. Every node that sees the same members computes the
// same order, and when a member joins or leaves only the keys whose owner
// or replicas it is move. Rank does not modify members.
func Rank(key string, members []string) []string {
	type scored struct {
		addr  string
		score uint64
	}
	s := make([]scored, len(members))
	for i, m := range members {
		s[i] = scored{m, weight(key, m)}
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].score != s[j].score {
			return s[i].score > s[j].score
		}
		return s[i].addr < s[j].addr
	})
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].addr
	}
	return out
}

// weight hashes (member, key) and mixes the result: FNV alone has weak
// high bits for keys that differ only in their last bytes (dev-1, dev-2),
// which would make the owner of neighbouring IDs the same member.
func weight(key, member string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	x := h.Sum64()
	// splitmix64 finaliser
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
