package gateway

import (
	"bytes"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// writeFileAtomic replaces name with b (mode 0644: a geofeed is public),
// unless it holds b already.
func writeFileAtomic(name string, b []byte) error {
	if old, err := os.ReadFile(name); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return renameio.WriteFile(name, b, 0o644, renameio.WithStaticPermissions(0o644), renameio.WithTempDir(filepath.Dir(name)))
}
