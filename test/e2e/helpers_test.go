//go:build e2e

package e2e

import "os"

func writeRootFile(path, data string) error {
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		return err
	}
	return os.Chmod(path, 0o644)
}

func init() {
	os.MkdirAll("/srv/cje2e", 0o755)
	os.WriteFile("/srv/cje2e/input", []byte("e2e input\n"), 0o644)
}
