package api

import (
	"bytes"
	"encoding/json"
)

// Marshal encodes v as every REST and WebSocket answer is encoded: without
// HTML escaping, so that '&', '<' and '>' read as themselves (a SAS token's
// "&sig=", a rule's "a < b"), also inside documents that were stored or
// embedded already encoded (json.RawMessage, which encoding/json escaped
// when they were first marshalled). The answers are JSON for API clients,
// never inlined into HTML; the dashboard puts values in the page with
// textContent.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return UnescapeHTML(bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})), nil
}

// UnescapeHTML turns the escapes \u003c, \u003e and \u0026 that
// encoding/json writes by default back into '<', '>' and '&' in a JSON
// document; every other escape, and an escaped backslash followed by
// "u0026", stay as they are. The result means the same JSON. doc is not
// modified: a document with nothing to change is returned as is, others
// are copied.
func UnescapeHTML(doc []byte) []byte {
	if !bytes.Contains(doc, []byte(`\u00`)) {
		return doc
	}
	out := make([]byte, 0, len(doc))
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		if c != '\\' || i+1 >= len(doc) {
			out = append(out, c)
			continue
		}
		if doc[i+1] == 'u' && i+6 <= len(doc) {
			if r := htmlEscape(doc[i+2 : i+6]); r != 0 {
				out = append(out, r)
				i += 5
				continue
			}
		}
		out = append(out, c, doc[i+1]) // an escape pair, copied whole
		i++
	}
	return out
}

// htmlEscape returns the character of the four hex digits of an escape
// encoding/json uses for HTML safety, or 0.
func htmlEscape(hex []byte) byte {
	switch string(bytes.ToLower(hex)) {
	case "003c":
		return '<'
	case "003e":
		return '>'
	case "0026":
		return '&'
	}
	return 0
}
