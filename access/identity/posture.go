package identity

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/edgegw/edgegw/firewall/rules"
)

// ErrStaleReport: a posture report is not newer than the device's last
// accepted one (a replay, or a client whose clock went back).
var ErrStaleReport = errors.New("posture report not newer than the last accepted one")

// PostureReport is a device's last accepted posture report as stored.
type PostureReport struct {
	Report             []byte    // the report's JSON, as the device sent it
	Reported, Received time.Time // the report's own time; when the gateway accepted it
}

// postureJSON is how a device's posture attributes are stored
// (devices.posture_json): names that stay when the Go fields move.
type postureJSON struct {
	OS            string `json:"os,omitempty"`
	OSVersion     string `json:"os_version,omitempty"`
	ClientVersion string `json:"client_version,omitempty"`
	DiskEncrypted int8   `json:"disk_encrypted,omitempty"` // rules.Check
	Firewall      int8   `json:"firewall,omitempty"`
	Compliant     int8   `json:"compliant,omitempty"`
}

// postureText encodes p for devices.posture_json; "" when p is all unknown.
func postureText(p rules.Posture) string {
	if p == (rules.Posture{}) {
		return ""
	}
	b, _ := json.Marshal(postureJSON{p.OS, p.OSVersion, p.ClientVersion, int8(p.DiskEncrypted), int8(p.Firewall), int8(p.Compliant)})
	return string(b)
}

// postureFromText decodes devices.posture_json.
func postureFromText(s string) (rules.Posture, error) {
	if s == "" {
		return rules.Posture{}, nil
	}
	var j postureJSON
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		return rules.Posture{}, fmt.Errorf("stored posture: %w", err)
	}
	check := func(c int8) rules.Check {
		if c < int8(rules.CheckUnknown) || c > int8(rules.CheckNo) {
			return rules.CheckUnknown // a value this build does not know: not known
		}
		return rules.Check(c)
	}
	return rules.Posture{OS: j.OS, OSVersion: j.OSVersion, ClientVersion: j.ClientVersion,
		DiskEncrypted: check(j.DiskEncrypted), Firewall: check(j.Firewall), Compliant: check(j.Compliant)}, nil
}

// RecordPosture stores the device's report (reported is the report's own
// time, which must be later than the stored one's), sets its quarantined
// state and the posture attributes rules match on (attrs, see
// Device.Posture). The generation moves, so the snapshot and with it the
// firewall and DNS policies follow, only when the state or the attributes
// change: a device reporting the same posture every few minutes costs a
// row write, no snapshot.
// Errors: ErrNotFound, ErrRevoked, ErrStaleReport, ErrUnavailable.
func (r *Registry) RecordPosture(ctx context.Context, id string, reported time.Time, report []byte, quarantined bool, attrs rules.Posture) (Device, error) {
	op := "record posture of " + id
	reported = dbTime(reported)
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return Device{}, unavailable(op+": begin", err)
	}
	defer tx.Rollback()
	d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if err != nil {
		return Device{}, unavailable(op, err)
	}
	if d.Revoked {
		return Device{}, fmt.Errorf("%s: %w", op, ErrRevoked)
	}
	var last sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT reported_us FROM device_posture WHERE device_id = $1`, id).Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Device{}, unavailable(op, err)
	}
	if last.Valid && reported.UnixMicro() <= last.Int64 {
		return Device{}, fmt.Errorf("%s: report of %s, last accepted %s: %w", op,
			reported.Format(time.RFC3339Nano), fromMicro(last).Format(time.RFC3339Nano), ErrStaleReport)
	}
	now := r.clock()
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_posture (device_id, report_json, reported_us, received_us) VALUES ($1, $2, $3, $4)
		ON CONFLICT (device_id) DO UPDATE SET report_json = excluded.report_json, reported_us = excluded.reported_us, received_us = excluded.received_us`,
		id, string(report), reported.UnixMicro(), now.UnixMicro()); err != nil {
		return Device{}, unavailable(op+": write report", err)
	}
	released := d.Quarantined != quarantined
	changed := released || d.Posture != attrs
	if changed {
		d.Quarantined, d.Posture = quarantined, attrs
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET quarantined = $2, posture_json = $3 WHERE id = $1`, id, quarantined, postureText(attrs)); err != nil {
			return Device{}, unavailable(op+": write state", err)
		}
		if err := bumpGeneration(ctx, tx, id); err != nil {
			return Device{}, unavailable(op+": bump generation", err)
		}
	}
	if err := r.commit(ctx, tx); err != nil {
		return Device{}, unavailable(op+": commit", err)
	}
	if released {
		verb := "device released from quarantine"
		if quarantined {
			verb = "device quarantined: its posture fails"
		}
		r.log.Info(verb, "device", d.ID, "name", d.Name, "email", d.Email, "address", d.Address)
	}
	if changed {
		r.poke()
	}
	return d, nil
}

// Posture reads the device's last accepted report; ok is false when it
// has none.
func (r *Registry) Posture(ctx context.Context, id string) (p PostureReport, ok bool, err error) {
	var (
		report             string
		reported, received int64
	)
	err = r.db.QueryRowContext(ctx, `SELECT report_json, reported_us, received_us FROM device_posture WHERE device_id = $1`, id).
		Scan(&report, &reported, &received)
	if errors.Is(err, sql.ErrNoRows) {
		return PostureReport{}, false, nil
	}
	if err != nil {
		return PostureReport{}, false, unavailable("read posture of "+id, err)
	}
	return PostureReport{Report: []byte(report), Reported: time.UnixMicro(reported).UTC(), Received: time.UnixMicro(received).UTC()}, true, nil
}

// QuarantineStale quarantines the active devices that are not yet
// quarantined and whose last report was received before reportedBefore,
// or that never reported and were enrolled before enrolledBefore: a
// device that stops reporting is not known to be compliant. It returns
// the devices it quarantined.
func (r *Registry) QuarantineStale(ctx context.Context, reportedBefore, enrolledBefore time.Time) ([]Device, error) {
	const op = "quarantine stale posture"
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, unavailable(op+": begin", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT d.id FROM devices d LEFT JOIN device_posture p ON p.device_id = d.id
		WHERE NOT d.revoked AND NOT d.pending AND NOT d.quarantined
		AND ((p.received_us IS NULL AND d.created_us < $2) OR p.received_us < $1)`,
		dbTime(reportedBefore).UnixMicro(), dbTime(enrolledBefore).UnixMicro())
	if err != nil {
		return nil, unavailable(op, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, unavailable(op, err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, unavailable(op, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var out []Device
	for _, id := range ids {
		// The report is no longer current: what it said is no longer
		// known, so every device.posture.* field becomes absent.
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET quarantined = $2, posture_json = '' WHERE id = $1`, id, true); err != nil {
			return nil, unavailable(op+": "+id, err)
		}
		if err := bumpGeneration(ctx, tx, id); err != nil {
			return nil, unavailable(op+": bump generation", err)
		}
		d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
		if err != nil {
			return nil, unavailable(op+": "+id, err)
		}
		out = append(out, d)
	}
	if err := r.commit(ctx, tx); err != nil {
		return nil, unavailable(op+": commit", err)
	}
	for _, d := range out {
		r.log.Info("device quarantined: no current posture report", "device", d.ID, "name", d.Name, "email", d.Email, "address", d.Address)
	}
	r.poke()
	return out, nil
}

// RulePosture is the posture rules (device.posture.*) see of d while
// posture rules run: a quarantined device, like its identity, keeps
// nothing but its failure (compliant false), so no allow on another
// attribute lets it past its quarantine.
func (d Device) RulePosture() rules.Posture {
	if d.Quarantined {
		return rules.Posture{Compliant: rules.CheckNo}
	}
	return d.Posture
}

// SetPosture tells the view whether posture rules run (posture:): only
// then can a device be compliant.
func (d *Devices) SetPosture(on bool) { d.postureOn.Store(on) }

// DevicePostureAttributes gives the posture attributes of the enrolled
// device at a as rules see them (RulePosture), while posture rules run
// (access.PostureAttributes, for the posture selector).
func (d *Devices) DevicePostureAttributes(a netip.Addr) (rules.Posture, bool) {
	if !d.postureOn.Load() {
		return rules.Posture{}, false
	}
	dev, ok := d.Load().ByAddr(a.Unmap())
	if !ok {
		return rules.Posture{}, false
	}
	return dev.RulePosture(), true
}

// DeviceCompliant tells whether the enrolled device at a passes its
// posture checks: posture rules run and the device is not quarantined
// (access.PostureLookup, for the device_posture selector).
func (d *Devices) DeviceCompliant(a netip.Addr) bool {
	if !d.postureOn.Load() {
		return false
	}
	dev, ok := d.Load().ByAddr(a.Unmap())
	return ok && !dev.Quarantined
}
