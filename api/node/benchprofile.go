package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// profileTarget is a node whose CPU profile the bench records during a
// run, so that a figure and the profile that explains it come from the
// same run.
type profileTarget struct{ name, url, token string }

// cpuProfiles records one CPU profile per target while a run lasts.
type cpuProfiles struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	files []string
	err   error
}

// startCPUProfiles asks every target's /debug/pprof/profile for the
// length of the run (less a second, so that the profile ends inside it)
// and writes each to dir/<name>-qos<q>.pprof. The nodes must serve
// profiles (`serve --pprof`).
func startCPUProfiles(ctx context.Context, dir string, targets []profileTarget, q byte, run time.Duration) *cpuProfiles {
	p := &cpuProfiles{}
	secs := int(run.Seconds()) - 1
	if secs < 1 {
		secs = 1
	}
	for _, t := range targets {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			file := filepath.Join(dir, fmt.Sprintf("%s-qos%d.pprof", t.name, q))
			err := fetchProfile(ctx, t, secs, file)
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil && p.err == nil {
				p.err = fmt.Errorf("CPU profile of %s: %w", t.name, err)
			}
			if err == nil {
				p.files = append(p.files, file)
			}
		}()
	}
	return p
}

// wait returns the files written, or the first error.
func (p *cpuProfiles) wait() ([]string, error) {
	p.wg.Wait()
	return p.files, p.err
}

func fetchProfile(ctx context.Context, t profileTarget, secs int, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", t.url, secs), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("%s: %s (does the node run with --pprof?)", res.Status, body)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
