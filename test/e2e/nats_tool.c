/*
 * nats_tool: a JetStream client for the relay tests, built on the NATS C
 * client (libnats).  The e2e tests compile it.
 *
 *   nats_tool [options] dump STREAM
 *       every message of the stream, one JSON line each:
 *       {"stream_seq": n, "subject": "...", "headers": {...}, "data": "<base64>"}
 *   nats_tool [options] sub STREAM FILTER COUNT TIMEOUT_MS
 *       the messages of an ephemeral consumer with filter subject FILTER,
 *       from the start of the stream, until COUNT came or TIMEOUT_MS passed
 *       without one; same lines
 *   nats_tool [options] latency STREAM SECONDS
 *       from now on, for SECONDS: each new message as
 *       {"recv_us": <CLOCK_REALTIME in microseconds>, "data": "<base64>"}
 *   nats_tool [options] info STREAM
 *       {"messages": n, "last_seq": n}
 *   nats_tool [options] addstream STREAM SUBJECT
 *       creates the stream (file storage, duplicate window 2 minutes)
 *   nats_tool [options] pubbench SUBJECT COUNT BODY
 *       publishes COUNT messages of BODY asynchronously, pipelined (4096 in
 *       flight), each with its own Nats-Msg-Id, waits for every PubAck and
 *       prints {"seconds": s, "failed": n}
 *
 * Options: -s URL, -u USER -p PASSWORD, -t TOKEN, -c CA_FILE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

static void
die(const char *what, natsStatus s)
{
	const char *last = nats_GetLastError(NULL);

	fprintf(stderr, "nats_tool: %s: %s\n", what, last && *last ? last : natsStatus_GetText(s));
	exit(1);
}

static void
json_string(const char *s, int len)
{
	putchar('"');
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void
base64(const unsigned char *p, int n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	putchar('"');
	for (int i = 0; i < n; i += 3)
	{
		unsigned v = p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);

		putchar(t[v >> 18 & 63]);
		putchar(t[v >> 12 & 63]);
		putchar(i + 1 < n ? t[v >> 6 & 63] : '=');
		putchar(i + 2 < n ? t[v & 63] : '=');
	}
	putchar('"');
}

static void
print_msg(natsMsg *m, uint64_t stream_seq)
{
	const char **keys = NULL;
	int			nkeys = 0;
	const char *subj = natsMsg_GetSubject(m);

	if (stream_seq == 0)
	{
		jsMsgMetaData *meta = NULL;

		if (natsMsg_GetMetaData(&meta, m) == NATS_OK)
		{
			stream_seq = meta->Sequence.Stream;
			jsMsgMetaData_Destroy(meta);
		}
	}
	printf("{\"stream_seq\": %llu, \"subject\": ", (unsigned long long) stream_seq);
	json_string(subj, strlen(subj));
	printf(", \"headers\": {");
	if (natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK)
	{
		for (int i = 0; i < nkeys; i++)
		{
			const char *v = NULL;

			natsMsgHeader_Get(m, keys[i], &v);
			if (i)
				printf(", ");
			json_string(keys[i], strlen(keys[i]));
			printf(": ");
			json_string(v ? v : "", v ? strlen(v) : 0);
		}
		free((void *) keys);
	}
	printf("}, \"data\": ");
	base64((const unsigned char *) natsMsg_GetData(m), natsMsg_GetDataLength(m));
	printf("}\n");
}

int
main(int argc, char **argv)
{
	const char *url = "nats://127.0.0.1:4222";
	const char *user = NULL;
	const char *pass = NULL;
	const char *token = NULL;
	const char *ca = NULL;
	natsOptions *opts;
	natsConnection *nc;
	jsCtx	   *js;
	natsStatus	s;
	int			i = 1;

	for (; i + 1 < argc && argv[i][0] == '-'; i += 2)
	{
		switch (argv[i][1])
		{
			case 's':
				url = argv[i + 1];
				break;
			case 'u':
				user = argv[i + 1];
				break;
			case 'p':
				pass = argv[i + 1];
				break;
			case 't':
				token = argv[i + 1];
				break;
			case 'c':
				ca = argv[i + 1];
				break;
			default:
				fprintf(stderr, "nats_tool: unknown option %s\n", argv[i]);
				return 2;
		}
	}
	if (i + 1 >= argc)
	{
		fprintf(stderr, "usage: nats_tool [options] dump|sub|latency|info STREAM ...\n");
		return 2;
	}
	natsOptions_Create(&opts);
	natsOptions_SetURL(opts, url);
	natsOptions_SetTimeout(opts, 5000);
	if (user)
		natsOptions_SetUserInfo(opts, user, pass);
	if (token)
		natsOptions_SetToken(opts, token);
	if (ca)
	{
		natsOptions_SetSecure(opts, true);
		if ((s = natsOptions_LoadCATrustedCertificates(opts, ca)) != NATS_OK)
			die("loading the CA", s);
	}
	if ((s = natsConnection_Connect(&nc, opts)) != NATS_OK)
		die("connecting", s);
	if ((s = natsConnection_JetStream(&js, nc, NULL)) != NATS_OK)
		die("JetStream", s);

	if (strcmp(argv[i], "info") == 0 || strcmp(argv[i], "dump") == 0)
	{
		jsStreamInfo *si = NULL;
		jsErrCode	jerr = 0;

		if ((s = js_GetStreamInfo(&si, js, argv[i + 1], NULL, &jerr)) != NATS_OK)
			die("stream info", s);
		if (strcmp(argv[i], "info") == 0)
			printf("{\"messages\": %llu, \"last_seq\": %llu}\n",
				   (unsigned long long) si->State.Msgs, (unsigned long long) si->State.LastSeq);
		else
			for (uint64_t seq = si->State.FirstSeq; seq <= si->State.LastSeq && si->State.Msgs > 0; seq++)
			{
				natsMsg    *m = NULL;

				s = js_GetMsg(&m, js, argv[i + 1], seq, NULL, &jerr);
				if (s == NATS_NOT_FOUND)
					continue;
				if (s != NATS_OK)
					die("getting a message", s);
				print_msg(m, seq);
				natsMsg_Destroy(m);
			}
		jsStreamInfo_Destroy(si);
	}
	else if (strcmp(argv[i], "sub") == 0 && i + 4 < argc)
	{
		jsSubOptions so;
		natsSubscription *sub;
		int			count = atoi(argv[i + 3]);
		int			timeout = atoi(argv[i + 4]);

		jsSubOptions_Init(&so);
		so.Stream = argv[i + 1];
		so.Config.DeliverPolicy = js_DeliverAll;
		so.Config.AckPolicy = js_AckNone;
		if ((s = js_SubscribeSync(&sub, js, argv[i + 2], NULL, &so, NULL)) != NATS_OK)
			die("subscribing", s);
		for (int n = 0; n < count; n++)
		{
			natsMsg    *m = NULL;

			if (natsSubscription_NextMsg(&m, sub, timeout) != NATS_OK)
				break;
			print_msg(m, 0);
			natsMsg_Destroy(m);
		}
		natsSubscription_Destroy(sub);
	}
	else if (strcmp(argv[i], "latency") == 0 && i + 2 < argc)
	{
		jsSubOptions so;
		natsSubscription *sub;
		struct timespec end;
		struct timespec now;

		jsSubOptions_Init(&so);
		so.Stream = argv[i + 1];
		so.Config.DeliverPolicy = js_DeliverNew;
		so.Config.AckPolicy = js_AckNone;
		if ((s = js_SubscribeSync(&sub, js, ">", NULL, &so, NULL)) != NATS_OK)
			die("subscribing", s);
		printf("{\"ready\": true}\n");
		fflush(stdout);
		clock_gettime(CLOCK_REALTIME, &end);
		end.tv_sec += atoi(argv[i + 2]);
		for (;;)
		{
			natsMsg    *m = NULL;

			clock_gettime(CLOCK_REALTIME, &now);
			if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
				break;
			if (natsSubscription_NextMsg(&m, sub, 200) != NATS_OK)
				continue;
			clock_gettime(CLOCK_REALTIME, &now);
			printf("{\"recv_us\": %lld, \"data\": ",
				   (long long) now.tv_sec * 1000000 + now.tv_nsec / 1000);
			base64((const unsigned char *) natsMsg_GetData(m), natsMsg_GetDataLength(m));
			printf("}\n");
			natsMsg_Destroy(m);
		}
		natsSubscription_Destroy(sub);
	}
	else if (strcmp(argv[i], "addstream") == 0 && i + 2 < argc)
	{
		jsStreamConfig cfg;
		jsStreamInfo *si = NULL;
		jsErrCode	jerr = 0;
		const char *subjects[1] = {argv[i + 2]};

		jsStreamConfig_Init(&cfg);
		cfg.Name = argv[i + 1];
		cfg.Subjects = subjects;
		cfg.SubjectsLen = 1;
		cfg.Storage = js_FileStorage;
		cfg.Duplicates = (int64_t) 120 * 1000000000;
		if ((s = js_AddStream(&si, js, &cfg, NULL, &jerr)) != NATS_OK)
			die("adding the stream", s);
		jsStreamInfo_Destroy(si);
	}
	else if (strcmp(argv[i], "pubbench") == 0 && i + 3 < argc)
	{
		int			count = atoi(argv[i + 2]);
		const char *body = argv[i + 3];
		struct timespec t0;
		struct timespec t1;
		jsOptions	jo;
		jsCtx	   *js2;
		jsPubOptions po;
		natsMsgList pending;
		int			failed = 0;

		jsOptions_Init(&jo);
		jo.PublishAsync.MaxPending = 4096;
		jo.PublishAsync.StallWait = 60000;
		if ((s = natsConnection_JetStream(&js2, nc, &jo)) != NATS_OK)
			die("JetStream", s);
		jsPubOptions_Init(&po);
		po.MaxWait = 60000;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int n = 0; n < count; n++)
		{
			natsMsg    *m = NULL;
			char		id[64];

			snprintf(id, sizeof(id), "bench.%ld.%d", (long) t0.tv_sec, n);
			natsMsg_Create(&m, argv[i + 1], NULL, body, strlen(body));
			natsMsgHeader_Set(m, "Nats-Msg-Id", id);
			if ((s = js_PublishMsgAsync(js2, &m, NULL)) != NATS_OK)
				die("publishing", s);
		}
		if ((s = js_PublishAsyncComplete(js2, &po)) != NATS_OK)
			die("waiting for the PubAcks", s);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (js_PublishAsyncGetPendingList(&pending, js2) == NATS_OK)
		{
			failed = pending.Count;
			natsMsgList_Destroy(&pending);
		}
		printf("{\"seconds\": %.6f, \"failed\": %d}\n",
			   (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, failed);
		jsCtx_Destroy(js2);
	}
	else
	{
		fprintf(stderr, "nats_tool: bad command\n");
		return 2;
	}
	fflush(stdout);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	natsOptions_Destroy(opts);
	return 0;
}
