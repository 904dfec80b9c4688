//go:build race

package node

// raceDetector says whether the tests run under the race detector, which
// makes everything 5 to 10 times slower.
const raceDetector = true
