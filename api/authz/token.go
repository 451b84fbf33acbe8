package authz

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// Token format: "tmk_" + 16 lower-case hex digits of ID + "_" + 64 lower-case
// hex digits of secret.
const (
	tokenPrefix = "tmk_"
	idLen       = 16
	secretLen   = 64
	// TokenLen is the length of every access token.
	TokenLen = len(tokenPrefix) + idLen + 1 + secretLen
)

// Mint makes a new access token from random (crypto/rand.Reader in
// production): the token to hand to the client once, its ID, and the hex
// SHA-256 of its secret, which is all the node stores.
func Mint(random io.Reader) (token, id, hash string, err error) {
	var raw [idLen/2 + secretLen/2]byte
	if _, err := io.ReadFull(random, raw[:]); err != nil {
		return "", "", "", fmt.Errorf("mint token: %w", err)
	}
	id = hex.EncodeToString(raw[:idLen/2])
	secret := raw[idLen/2:]
	return tokenPrefix + id + "_" + hex.EncodeToString(secret), id, HashSecret(secret), nil
}

// ParseToken splits an access token into its ID and secret. It accepts
// exactly the form Mint makes (lower-case hex, fixed lengths) and nothing
// else; ok is false for anything else, such as the admin token.
func ParseToken(tok string) (id string, secret []byte, ok bool) {
	if len(tok) != TokenLen || !strings.HasPrefix(tok, tokenPrefix) {
		return "", nil, false
	}
	rest := tok[len(tokenPrefix):]
	id, sec := rest[:idLen], rest[idLen:]
	if sec[0] != '_' || !lowerHex(id) || !lowerHex(sec[1:]) {
		return "", nil, false
	}
	secret, err := hex.DecodeString(sec[1:])
	if err != nil {
		return "", nil, false
	}
	return id, secret, true
}

// HashSecret is the hex SHA-256 of a token's secret, as stored.
func HashSecret(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
