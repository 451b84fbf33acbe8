package query

import (
	"fmt"
	"strings"
)

// tokKind classifies a token.
type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tNumber
	tString
	tPunct // ( ) [ ] , . * and the comparison operators
)

// token is one lexeme with its 1-based position in the query.
type token struct {
	kind tokKind
	text string // an identifier as written, a punctuation mark, a number's digits, a string's decoded value
	pos  int
}

// lex splits src into tokens, ending with tEOF.
func lex(src string) ([]token, error) {
	var out []token
	i := 0
	for i < len(src) {
		c := src[i]
		start := i + 1
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case isIdentStart(c):
			j := i + 1
			for j < len(src) && isIdentPart(src[j]) {
				j++
			}
			out = append(out, token{tIdent, src[i:j], start})
			i = j
		case isDigit(c) || (c == '-' && i+1 < len(src) && (isDigit(src[i+1]) || src[i+1] == '.')) || (c == '.' && i+1 < len(src) && isDigit(src[i+1]) && !afterPathPart(out)):
			j := i + 1
			for j < len(src) && (isDigit(src[j]) || src[j] == '.' || src[j] == 'e' || src[j] == 'E' ||
				((src[j] == '-' || src[j] == '+') && (src[j-1] == 'e' || src[j-1] == 'E'))) {
				j++
			}
			out = append(out, token{tNumber, src[i:j], start})
			i = j
		case c == '\'' || c == '"':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(src) {
					return nil, &SyntaxError{Pos: start, Msg: "unterminated string"}
				}
				if src[j] == c {
					if j+1 < len(src) && src[j+1] == c { // '' is a quote
						b.WriteByte(c)
						j += 2
						continue
					}
					break
				}
				if src[j] == '\\' && j+1 < len(src) {
					j++
				}
				b.WriteByte(src[j])
				j++
			}
			out = append(out, token{tString, b.String(), start})
			i = j + 1
		default:
			two := ""
			if i+1 < len(src) {
				two = src[i : i+2]
			}
			switch {
			case two == "!=" || two == "<>" || two == "<=" || two == ">=":
				out = append(out, token{tPunct, two, start})
				i += 2
			case strings.IndexByte("()[],.*=<>", c) >= 0:
				out = append(out, token{tPunct, string(c), start})
				i++
			default:
				return nil, &SyntaxError{Pos: start, Msg: fmt.Sprintf("unexpected character %q", rune(c))}
			}
		}
	}
	return append(out, token{tEOF, "", len(src) + 1}), nil
}

// afterPathPart reports whether the last token ends a path segment, so that
// ".5" after it is a dot and a number-like segment, not a number.
func afterPathPart(out []token) bool {
	return len(out) > 0 && (out[len(out)-1].kind == tIdent || out[len(out)-1].text == "]")
}

func isIdentStart(c byte) bool {
	return c == '_' || c == '$' || c == '@' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80
}

func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '-' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
