package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// DefaultProfileSeconds is how long --profile samples the leader when the
// run has no --duration.
const DefaultProfileSeconds = 10

// profileSeconds is how long the leader is profiled: the run's Duration,
// rounded up, else DefaultProfileSeconds. A CPU profile only samples CPU
// use, so a run that ends sooner adds idle seconds and no samples.
func (c Cluster) profileSeconds() int {
	if c.Duration > 0 {
		return int(math.Ceil(c.Duration.Seconds()))
	}
	return DefaultProfileSeconds
}

// startProfile asks the node at admin (an admin listener with --pprof) for
// a CPU profile of the next seconds and returns a function that waits for
// it and writes it to file. The request is bounded by the profile's length
// plus 30 s.
func startProfile(ctx context.Context, admin string, seconds int, file string) (wait func() error) {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
		defer cancel()
		u := url.URL{Scheme: "http", Host: admin, Path: "/debug/pprof/profile", RawQuery: "seconds=" + strconv.Itoa(seconds)}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- fmt.Errorf("profile of %s: %w", admin, err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			done <- fmt.Errorf("profile of %s: %s: %s", admin, resp.Status, b)
			return
		}
		f, err := os.Create(file)
		if err != nil {
			done <- err
			return
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			done <- fmt.Errorf("profile of %s: %w", admin, err)
			return
		}
		done <- f.Close()
	}()
	return func() error { return <-done }
}
