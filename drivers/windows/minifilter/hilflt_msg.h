/* hilflt_msg.h - messages on the hilflt communication port (shared with hilfltc.exe). */
#ifndef HIL_FLT_MSG_H
#define HIL_FLT_MSG_H

#define HILFLT_PORT_NAME L"\\HilFltPort"
#define HILFLT_MAGIC 0x464c4948u /* "HILF" */
#define HILFLT_OP_PING 1u
#define HILFLT_MAX_TEXT 256u

typedef struct _HILFLT_REQUEST {
    unsigned int magic;
    unsigned int op;
    unsigned int len;                    /* bytes used in text */
    unsigned char text[HILFLT_MAX_TEXT];
} HILFLT_REQUEST;

typedef struct _HILFLT_REPLY {
    unsigned int magic;
    unsigned int status;                 /* 0 = ok */
    unsigned int sequence;               /* messages seen on this connection */
    unsigned int len;
    unsigned char text[HILFLT_MAX_TEXT + 8];
} HILFLT_REPLY;

#endif
