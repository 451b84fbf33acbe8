package authz

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
)

func TestMintParse(t *testing.T) {
	tok, id, hash, err := Mint(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	gid, secret, ok := ParseToken(tok)
	if !ok || gid != id || HashSecret(secret) != hash || len(tok) != TokenLen {
		t.Fatalf("ParseToken(%q) = %q, %x, %v; minted id %q hash %s", tok, gid, secret, ok, id, hash)
	}
	tok2, id2, _, _ := Mint(rand.Reader)
	if tok2 == tok || id2 == id {
		t.Fatal("two mints gave the same token")
	}
	if _, _, _, err := Mint(bytes.NewReader(nil)); err == nil {
		t.Fatal("Mint with no randomness succeeded")
	}
	for name, bad := range map[string]string{
		"empty":          "",
		"admin-like":     "test-admin-token",
		"upper case":     strings.ToUpper(tok[:4]) + tok[4:],
		"upper hex":      tok[:len(tok)-1] + "F",
		"short":          tok[:len(tok)-1],
		"long":           tok + "0",
		"no separator":   tok[:20] + "x" + tok[21:],
		"not hex id":     tok[:4] + "g" + tok[5:],
		"not hex secret": tok[:len(tok)-1] + "z",
		"wrong prefix":   "tmx_" + tok[4:],
		"space":          tok[:30] + " " + tok[31:],
		"multibyte":      tok[:len(tok)-2] + "é",
	} {
		if _, _, ok := ParseToken(bad); ok {
			t.Errorf("%s: ParseToken(%q) accepted", name, bad)
		}
	}
}

// FuzzParseToken: ParseToken never panics, accepts only TokenLen-byte
// strings, and what it accepts is exactly what Mint's format gives back.
func FuzzParseToken(f *testing.F) {
	tok, _, _, _ := Mint(rand.Reader)
	for _, s := range []string{tok, "", "tmk_", "tmk_0123456789abcdef_", tok[:len(tok)-1] + "Z", strings.Repeat("_", TokenLen)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, ok := ParseToken(s)
		if !ok {
			return
		}
		if len(s) != TokenLen || len(id) != idLen || len(secret) != secretLen/2 {
			t.Fatalf("accepted %q: id %q secret %x", s, id, secret)
		}
		var again strings.Builder
		again.WriteString(tokenPrefix + id + "_")
		for _, b := range secret {
			again.WriteString(string("0123456789abcdef"[b>>4]) + string("0123456789abcdef"[b&15]))
		}
		if again.String() != s {
			t.Fatalf("accepted %q, which does not round-trip (%q)", s, again.String())
		}
	})
}
