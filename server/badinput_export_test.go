package server

// Test-only accessors for the external tests of this package (server_test).

// ConnectedForTest returns how many clients hold an open round channel: a test starts Run once
// every party it wants in the first cohort is connected.
func (s *Server) ConnectedForTest() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.sessions {
		if ss.alive() {
			n++
		}
	}
	return n
}
