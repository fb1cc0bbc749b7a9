package storage

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// Certificate page tokens are base64url(version byte 1 | issued_at int64
// BE | serial): the keyset (IssuedAt in Unix nanoseconds, Serial) of the
// last certificate of a page. Both stores use them; they are opaque to
// callers and bound to the keyset, not to a filter.
const pageTokenVersion = 1

// EncodePageToken returns the page token that continues after the
// certificate with this keyset.
func EncodePageToken(issuedAt int64, serial string) string {
	b := make([]byte, 9, 9+len(serial))
	b[0] = pageTokenVersion
	binary.BigEndian.PutUint64(b[1:], uint64(issuedAt))
	return base64.RawURLEncoding.EncodeToString(append(b, serial...))
}

// DecodePageToken returns the keyset of tok, or an error wrapping
// ErrInvalidArgument when the store did not issue it.
func DecodePageToken(tok string) (issuedAt int64, serial string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 10 || b[0] != pageTokenVersion {
		return 0, "", fmt.Errorf("malformed page token: %w", ErrInvalidArgument)
	}
	return int64(binary.BigEndian.Uint64(b[1:9])), string(b[9:]), nil
}
