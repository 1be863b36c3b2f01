package identity

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// Filter selects and pages devices for Page.
type Filter struct {
	// Query matches a substring, case-insensitive, of the id, name,
	// email, address or groups (as stored: the JSON list) of a device;
	// "" matches every device.
	Query string
	// Status is "" (any), "active", "expired" or "revoked", at time Now.
	Status string
	Now    time.Time
	// Offset skips that many matches (oldest first); Limit caps the page
	// (0: no cap).
	Offset, Limit int
}

// Page reads one page of the devices that match f, oldest first, and how
// many match in all. The database filters and pages, so a console's page
// of 50 out of 10,000 devices does not read the other 9,950.
func (r *Registry) Page(ctx context.Context, f Filter) ([]Device, int, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Query != "" {
		// LIKE's own wildcards in the query are literal.
		pat := arg("%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(strings.ToLower(f.Query)) + "%")
		var ors []string
		for _, col := range []string{"id", "name", "email", "address", "groups_json"} {
			ors = append(ors, "lower("+col+") LIKE "+pat+` ESCAPE '\'`)
		}
		where = append(where, "("+strings.Join(ors, " OR ")+")")
	}
	switch f.Status {
	case "":
	case "revoked":
		where = append(where, "revoked")
	case "active":
		where = append(where, "NOT revoked AND (expires_us IS NULL OR expires_us > "+arg(dbTime(f.Now).UnixMicro())+")")
	case "expired":
		where = append(where, "NOT revoked AND expires_us IS NOT NULL AND expires_us <= "+arg(dbTime(f.Now).UnixMicro()))
	default:
		return nil, 0, fmt.Errorf("device status %q: expected active, expired or revoked", f.Status)
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int
	if err := r.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices`+cond, args...).Scan(&total); err != nil {
		return nil, 0, unavailable("count devices", err)
	}
	q := `SELECT ` + deviceCols + ` FROM devices` + cond + ` ORDER BY created_us, id`
	if f.Limit > 0 || f.Offset > 0 {
		limit := f.Limit
		if limit <= 0 {
			limit = math.MaxInt32 // SQLite wants a LIMIT before an OFFSET
		}
		q += " LIMIT " + arg(limit) + " OFFSET " + arg(max(f.Offset, 0))
	}
	devs, err := r.query(ctx, "page devices", q, args...)
	if err != nil {
		return nil, 0, err
	}
	return devs, total, nil
}
