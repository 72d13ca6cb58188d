/*
 * capture.h: recording events: the change-capture trigger and publish().
 */
#ifndef NOTIFY_EXT_CAPTURE_H
#define NOTIFY_EXT_CAPTURE_H

extern void capture_init(void);

#endif							/* NOTIFY_EXT_CAPTURE_H */
