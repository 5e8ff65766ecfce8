package longpoll

// OnHeld makes h call f each time a poll has attached to its session and
// is held. Set it before h serves anything.
func OnHeld(h *Handler, f func()) { h.testHookHeld = f }
