package postgres

import "context"

// ShowSetting returns a session setting of one of s's pooled connections.
func ShowSetting(ctx context.Context, s *Store, name string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
	return v, err
}

// WithParams is withParams.
var WithParams = withParams
