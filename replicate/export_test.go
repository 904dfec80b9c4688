package replicate

// Waiters is how many WaitCommitted calls l holds (tests only).
func Waiters(l *Leader) int {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	return len(l.waiters)
}
