package rewards

import "errors"

// ErrorCode returns the short code of an input this package refuses: the
// "code" header of its DLQ messages, and the error code POST /v1/labels
// answers for a label it refuses. The codes are label_in_future,
// held_labels_full, wrong_partition, invalid_label, invalid_record, and refused for
// anything else.
func ErrorCode(err error) string {
	switch {
	case errors.Is(err, ErrLabelInFuture):
		return "label_in_future"
	case errors.Is(err, ErrHeldLabelsFull):
		return "held_labels_full"
	case errors.Is(err, ErrWrongPartition):
		return "wrong_partition"
	case errors.Is(err, ErrBadLabel):
		return "invalid_label"
	case errors.Is(err, ErrBadRecord):
		return "invalid_record"
	}
	return "refused"
}
