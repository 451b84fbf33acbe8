package twin

import (
	"encoding/json"
	"math"
	"strconv"
)

// metaNode is the metadata of one node of a desired or reported section: when
// it was last touched and at which section $version, and the metadata of its
// members when the node is an object. Like section values, nodes are never
// mutated once they are part of a Twin.
type metaNode struct {
	at   string // "$lastUpdated", RFC 3339 with nanoseconds; "" when unknown
	ver  int64  // "$lastUpdatedVersion"
	kids map[string]*metaNode
}

// stamp returns the metadata of a section after the merge patch diff (as
// computed by diffPatch) was applied to it: every node on a changed path,
// the root included, gets the stamp (at, ver); deleted members lose their
// metadata; a member that became a leaf loses its members' metadata. node
// may be nil and is not mutated.
func stamp(node *metaNode, diff map[string]any, at string, ver int64) *metaNode {
	out := &metaNode{at: at, ver: ver}
	if node != nil && len(node.kids) > 0 {
		out.kids = make(map[string]*metaNode, len(node.kids)+len(diff))
		for k, c := range node.kids {
			out.kids[k] = c
		}
	} else {
		out.kids = make(map[string]*metaNode, len(diff))
	}
	for k, v := range diff {
		switch v := v.(type) {
		case nil:
			delete(out.kids, k)
		case map[string]any:
			// Either the member was an object and v holds what changed in
			// it, or it was not and v is the whole new object; in the
			// second case its old node has no members to keep.
			out.kids[k] = stamp(out.kids[k], v, at, ver)
		default:
			out.kids[k] = &metaNode{at: at, ver: ver}
		}
	}
	return out
}

// appendMeta appends the JSON form of node to b: {"$lastUpdated":…,
// "$lastUpdatedVersion":…, member: {…}, …}, members in sorted order. A nil
// node is {}.
func appendMeta(b []byte, node *metaNode) []byte {
	b = append(b, '{')
	if node == nil {
		return append(b, '}')
	}
	first := true
	if node.at != "" || node.ver != 0 {
		b = append(b, `"$lastUpdated":`...)
		b = appendString(b, node.at)
		b = append(b, `,"$lastUpdatedVersion":`...)
		b = strconv.AppendInt(b, node.ver, 10)
		first = false
	}
	for _, k := range sortedKeys(node.kids) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, k)
		b = append(b, ':')
		b = appendMeta(b, node.kids[k])
	}
	return append(b, '}')
}

// loadMeta rebuilds metadata from its decoded JSON form v, keeping only
// nodes that match the structure of the section value doc, so that metadata
// never describes members that do not exist. It returns nil when v is not an
// object.
func loadMeta(v any, doc any) *metaNode {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	node := &metaNode{}
	node.at, _ = m["$lastUpdated"].(string)
	if f, ok := m["$lastUpdatedVersion"].(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
		node.ver = int64(f)
	}
	if d, ok := doc.(map[string]any); ok {
		for k, dv := range d {
			if c := loadMeta(m[k], dv); c != nil {
				if node.kids == nil {
					node.kids = map[string]*metaNode{}
				}
				node.kids[k] = c
			}
		}
	}
	return node
}

// metaJSON returns the JSON form of node.
func metaJSON(node *metaNode) json.RawMessage {
	return appendMeta(nil, node)
}
